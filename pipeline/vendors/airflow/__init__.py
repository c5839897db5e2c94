"""airflow: normalize.py (pure: REST documents -> JobEvents), ingest.py (the /api/v1 and /api/v2
poller), simulator.py (both API flavours over real HTTP), bench.py; this file declares the
vendor once (the registry finds it)."""

from pipeline.vendors.registry import Vendor

VENDOR = Vendor(
    "airflow", added=6, kind="pull",
    ingest_help="Poll Apache Airflow's stable REST API (/api/v1 basic auth, /api/v2 JWT): DAG runs, task instances and audit-log entries changed since the last poll.",
    simulate_help="Serve Airflow's REST API (/api/v1 with basic auth and /api/v2 with POST /auth/token) with DAGs that retry, reschedule, defer, map, fail upstream and go zombie, until Ctrl-C.",
    settings="pipeline.vendors.airflow.ingest:AirflowSettings",
    simulator="pipeline.vendors.airflow.simulator:demo_simulator",
    demo_faults="error=0.05,storm=0.03,retry_after_s=1,malformed=0.02,duplicate=0.1,reorder=0.3",
    demo_config=(("user", "airflow"), ("api_version", "v2"), ("source", "airflow-demo"), ("poll_interval_s", 1)),
    demo_secrets=(("JOBSTREAM_AIRFLOW_PASSWORD", "airflow-password"),),
    hostile=({"dag_id": "etl", "dag_run_id": "manual__1", "task_id": "load", "state": "exploded"},
             "{\"task_instances\": [{\"dag_id\": "),
    bench="pipeline.vendors.airflow.bench:airflow_run",
)
