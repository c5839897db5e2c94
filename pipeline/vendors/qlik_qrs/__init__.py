"""qlik_qrs: normalize.py (pure: raw document -> JobEvents); ingest.py and simulator.py; this file declares the vendor once (the registry finds it)."""

from pipeline.vendors.registry import Vendor

VENDOR = Vendor(
    "qlik_qrs", added=2, kind="pull",
    ingest_help="Poll Qlik Sense QRS execution results and sessions (modifiedDate watermark) into raw.qlik_qrs.",
    simulate_help="Serve Qlik Sense QRS (/qrs/..., Xrfkey, X-Qlik-User) with tasks that run, fail and retry, until Ctrl-C.",
    ingest_command="pipeline.vendors.qlik_qrs.commands:ingest",
    settings="pipeline.vendors.qlik_qrs.ingest:QrsSettings",
    simulator="pipeline.vendors.qlik_qrs.simulator:demo_simulator",
    demo_faults="error=0.05,storm=0.03,retry_after_s=1,malformed=0.02,duplicate=0.1,reorder=0.3",
    demo_config=(("source", "qrs-demo"), ("poll_interval_s", 1)),
    hostile=({"id": "r-1", "status": "yesterday", "startTime": "soon"},),
    bench="pipeline.bench.workload:_qrs_run",
)
