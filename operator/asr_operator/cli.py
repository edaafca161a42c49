"""`asr-operator`: run the kopf operator configured from ASR_OPERATOR_* env vars (see settings.py)."""

from __future__ import annotations

import argparse
import logging
import secrets
import sys

import kopf


def main(argv: list[str] | None = None) -> int:
    from .settings import OperatorSettings

    parser = argparse.ArgumentParser(
        prog="asr-operator",
        description="Reconcile ASRDeployment resources (asr-platform.io/v1alpha1). "
        "Configured by ASR_OPERATOR_* env vars: WATCH_NAMESPACES, INFERENCE_IMAGE, PEERING_NAME, "
        "LIVENESS_PORT, METRICS_PORT, LOG_LEVEL, RESYNC_INTERVAL_S.",
    )
    parser.add_argument("--print-settings", action="store_true", help="print the effective settings and exit")
    args = parser.parse_args(argv)

    config = OperatorSettings()
    if args.print_settings:
        print(config.model_dump_json(indent=2))
        return 0

    configure_logging(config.log_level)
    if config.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(config.metrics_port, addr=config.bind_address)

    registry = kopf.OperatorRegistry()
    # A plain OperatorRegistry has no login handlers (only kopf's default registry gets them): without this the
    # operator cannot authenticate at all, in-cluster or via $KUBECONFIG ("Ran out of valid credentials").
    kopf.on.login(registry=registry)(kopf.login_via_client)
    from .handlers import register

    register(registry, config)
    kopf.run(
        registry=registry,
        clusterwide=config.clusterwide,
        namespaces=config.namespaces,
        standalone=not config.peering_name,
        peering_name=config.peering_name or None,
        # kopf pauses an operator while a peer of higher OR EQUAL priority is alive: replicas of one Deployment
        # need distinct priorities, or every replica pauses. The highest random draw leads; the rest stand by.
        priority=secrets.randbelow(1_000_000) + 1 if config.peering_name else 0,
        liveness_endpoint=config.liveness_endpoint,
    )
    return 0


def configure_logging(level_name: str) -> None:
    level = getattr(logging, level_name.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # kopf's liveness endpoint is aiohttp: at INFO it logs one access line per kubelet probe (seen on the real
    # node: every 20 s, forever). Kept at DEBUG; a failing probe still shows in the kubelet's events.
    if level > logging.DEBUG:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


if __name__ == "__main__":
    raise SystemExit(main())
