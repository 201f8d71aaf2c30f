r"""The example code location with each step of a run in its own Kubernetes Job.

    dagster asset materialize -f deploy/k8s/definitions.py --select datanet,digits_classifier \
        -c deploy/k8s/run_config.yaml

Run inside the cluster, with the instance of deploy/k8s/dagster.yaml: see docs/scaling.md.
"""

import dagster as dg
from dagster_k8s import k8s_job_executor

import assets.definitions

defs = dg.Definitions.merge(assets.definitions.defs, dg.Definitions(executor=k8s_job_executor))
