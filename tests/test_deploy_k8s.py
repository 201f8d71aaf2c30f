"""The Kubernetes example in deploy/k8s/, checked without a cluster (none runs here).

What is checked: both files against dagster-k8s's own config schemas, the code location's
executor, and the run pod that dagster-k8s builds from the launcher config (image, service
account, secrets, the shared lineage-state volume). What is not: submitting it to a cluster.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster_k8s import (
    DagsterK8sJobConfig,
    K8sRunLauncher,
    construct_dagster_k8s_job,
    k8s_job_executor,
)

from tests.deploy_world import DEPLOY, POSTGRES_YAML

K8S = DEPLOY / "k8s"
IMAGE = "registry.example/lineage:1"


def _yaml(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text(encoding="utf-8")))


def _launcher_config(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` validated and defaulted by K8sRunLauncher's schema, through Dagster's public API."""

    @dg.op(config_schema=K8sRunLauncher.config_type())
    def launcher() -> None: ...

    @dg.job
    def check() -> None:
        launcher()

    done = dg.validate_run_config(check, {"ops": {"launcher": {"config": raw}}})
    return dict(done["ops"]["launcher"]["config"])


def _load_definitions(path: Path) -> dg.Definitions:
    spec = importlib.util.spec_from_file_location("k8s_definitions", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    defs = module.defs
    assert isinstance(defs, dg.Definitions)
    return defs


def test_instance_config_is_valid_and_its_run_pods_share_the_lineage_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LINEAGE_JOB_IMAGE", IMAGE)
    doc = _yaml(K8S / "dagster.yaml")
    assert doc["storage"] == _yaml(POSTGRES_YAML)["storage"]
    launcher = doc["run_launcher"]
    module = importlib.import_module(launcher["module"])
    assert getattr(module, launcher["class"]) is K8sRunLauncher

    config = _launcher_config(launcher["config"])
    with pytest.raises(dg.DagsterInvalidConfigError, match="volume_mount"):
        _launcher_config({**launcher["config"], "volume_mount": []})  # a typo is refused

    fields = {k: v for k, v in config.items() if k in DagsterK8sJobConfig._fields}
    job = construct_dagster_k8s_job(
        DagsterK8sJobConfig.from_dict(fields),
        args=["dagster", "api", "execute_run", "{}"],
        job_name="dagster-run-example",
        component="run_worker",
    )
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert container.image == IMAGE
    assert pod.service_account_name == "lineage-dagster"
    assert job.metadata.namespace is None and config["job_namespace"] == "lineage"
    env = {e.name: e for e in container.env}
    assert env["LINEAGE_HOME"].value == "/var/lineage"
    assert env["DAGSTER_HOME"].value == "/opt/dagster/dagster_home"
    secret = env["DAGSTER_PG_PASSWORD"].value_from.secret_key_ref
    assert (secret.name, secret.key) == ("lineage-dagster-postgres", "postgresql-password")
    sources = {(s.config_map_ref or s.secret_ref).name for s in container.env_from}
    assert sources == {"lineage-dagster-env", "lineage-signing"}
    volumes = {v.name: v for v in pod.volumes}
    assert volumes["lineage-state"].persistent_volume_claim.claim_name == "lineage-state"
    mounts = {m.name: m.mount_path for m in container.volume_mounts}
    assert mounts["lineage-state"] == "/var/lineage"


def test_code_location_runs_steps_as_k8s_jobs_with_a_valid_run_config() -> None:
    defs = _load_definitions(K8S / "definitions.py")
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.executor_def is k8s_job_executor
    run_config = _yaml(K8S / "run_config.yaml")
    done = dg.validate_run_config(job, run_config)
    assert done["execution"]["k8s"]["max_concurrent"] == 4  # keyed by the executor that took it
    bad = {"execution": {"config": {**run_config["execution"]["config"], "max_concurent": 4}}}
    with pytest.raises(dg.DagsterInvalidConfigError, match="max_concurent"):
        dg.validate_run_config(job, bad)
