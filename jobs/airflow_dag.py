"""An Airflow DAG that runs the nightly stages as tasks, one per stage, for the run's logical date.

Importable only where Airflow is installed (it is not a dependency of shopllm). Copy this file into
your DAGs folder and set the variables below (or the SHOPLLM_* environment variables). Each task is the
same `shopllm <stage>` command the nightly job runs, so a failed task can be cleared and retried alone;
stages publish atomically, so a retry never leaves half a partition.
"""

from __future__ import annotations

import os

import pendulum
from airflow import DAG
from airflow.operators.bash import BashOperator

SHOPLLM = os.environ.get("SHOPLLM_BIN", "shopllm")
CATALOG = os.environ.get("SHOPLLM_CATALOG", "/data/raw/catalog/*.jsonl.gz")
EVENTS = os.environ.get("SHOPLLM_EVENTS", "/data/raw/events/*.jsonl.gz")
OUT = os.environ.get("SHOPLLM_OUT", "/data/shopllm")
CONFIG = os.environ.get("SHOPLLM_CONFIG", "")
BEAM_ARGS = os.environ.get("SHOPLLM_BEAM_ARGS", "")  # e.g. "--runner=FlinkRunner --flink_master=host:8081"

common = f"--out {OUT} --date {{{{ ds }}}}" + (f" --config {CONFIG}" if CONFIG else "")
commands = {
    "ingest": f"{SHOPLLM} ingest --catalog '{CATALOG}' --events '{EVENTS}' {common} {BEAM_ARGS}",
    "prepare": f"{SHOPLLM} prepare {common} {BEAM_ARGS}",
    "train": f"{SHOPLLM} train {common}",
    "score": f"{SHOPLLM} score {common} {BEAM_ARGS}",
    "evaluate": f"{SHOPLLM} evaluate {common}",
    "report": f"{SHOPLLM} report --out {OUT} --date {{{{ ds }}}}",
}

with DAG(
    dag_id="shopllm_nightly",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # the models/ warm start assumes nights run in order
    default_args={"retries": 1},
    tags=["shopllm"],
) as dag:
    previous = None
    for stage, command in commands.items():
        task = BashOperator(task_id=stage, bash_command=command)
        if previous is not None:
            previous >> task
        previous = task
