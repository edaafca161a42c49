"""Kubernetes resource quantities: parse, compare by value, and write in the API server's canonical form.

The API server stores and returns every quantity canonicalised (`1` → "1", "0.5" → "500m", "1024Mi" → "1Gi",
1000 → "1k"), so the operator writes quantities in that form and compares them by value: a manifest that only
differs in how a quantity is spelled is not drift.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_QUANTITY_RE = re.compile(r"([+-]?[0-9]*\.?[0-9]+|[+-]?[0-9]+\.)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?")
_NANO = Decimal("1e-9")


class QuantityError(ValueError):
    """Not a Kubernetes quantity (of the forms this operator writes)."""


def _parse(q: str | int | float) -> tuple[Decimal, bool]:
    """(value in base units, binary suffix?) of a quantity; an int/float is a suffix-less decimal one."""
    if isinstance(q, bool):
        raise QuantityError(f"not a quantity: {q!r}")
    if isinstance(q, int | float):
        return Decimal(str(q)), False
    m = _QUANTITY_RE.fullmatch(q.strip())
    if not m:
        raise QuantityError(f"not a quantity: {q!r}")
    try:
        number = Decimal(m.group(1))
    except InvalidOperation:  # pragma: no cover - the regex admits only decimals
        raise QuantityError(f"not a quantity: {q!r}") from None
    suffix = m.group(2) or ""
    if suffix in _BINARY_SUFFIXES:
        return number * (Decimal(2) ** _BINARY_SUFFIXES[suffix]), True
    return number * (Decimal(10) ** _DECIMAL_SUFFIXES[suffix]), False


def parse_quantity(q: str | int | float) -> Decimal:
    """A quantity as a number of base units (as the API server keeps it: rounded up to nano units)."""
    value, _ = _parse(q)
    return value.quantize(_NANO, rounding=ROUND_CEILING) if value != value.to_integral_value() else value


def _decimal_form(value: Decimal) -> str:
    """mantissa + decimal SI suffix, the exponent the largest multiple of 3 that keeps the mantissa integral."""
    exponent = -9
    mantissa = int(value / (Decimal(10) ** exponent))
    while exponent < 18 and mantissa % 1000 == 0 and mantissa != 0:
        mantissa //= 1000
        exponent += 3
    suffix = next(s for s, e in _DECIMAL_SUFFIXES.items() if e == exponent)
    return f"{mantissa}{suffix}"


def canonical_quantity(q: str | int | float) -> str:
    """The string the API server returns for `q` (Kubernetes' Quantity.String()).

    Binary-suffixed values of at least 1Ki that are whole numbers keep a binary suffix (the largest that
    divides them); everything else is written with a decimal SI suffix.
    """
    value, binary = _parse(q)
    value = parse_quantity(q)
    if value == 0:
        return "0"
    negative = value < 0
    magnitude = -value if negative else value
    if binary and magnitude >= 1024 and magnitude == magnitude.to_integral_value():
        number, shift = int(magnitude), 0
        while shift < 60 and number % 1024 == 0:
            number //= 1024
            shift += 10
        suffix = next((s for s, e in _BINARY_SUFFIXES.items() if e == shift), "")
        text = f"{number}{suffix}"
    else:
        text = _decimal_form(magnitude)
    return f"-{text}" if negative else text


def is_quantity(q: object) -> bool:
    try:
        _parse(q)  # type: ignore[arg-type]
    except (QuantityError, TypeError):
        return False
    return True


def quantities_equal(a: object, b: object) -> bool:
    """Equal as quantities (both parse and have the same value)."""
    if not (is_quantity(a) and is_quantity(b)):
        return False
    return parse_quantity(a) == parse_quantity(b)  # type: ignore[arg-type]
