r"""The example code location with every step of every run sent to Celery workers.

    dagster-celery worker start -A dagster_celery.app -y deploy/celery.yaml
    dagster asset materialize -f deploy/celery_definitions.py --select datanet,digits_classifier \
        -c deploy/celery.yaml

The workers load this same file (and so the same resources, from LINEAGE_* variables) and
share the Dagster instance of deploy/dagster.postgres.yaml: see docs/scaling.md.
"""

import dagster as dg
from dagster_celery import celery_executor

import assets.definitions

defs = dg.Definitions.merge(assets.definitions.defs, dg.Definitions(executor=celery_executor))
