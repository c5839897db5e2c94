"""qlik_cloud: normalize.py (pure: raw document -> JobEvents); ingest.py and simulator.py; this file declares the vendor once (the registry finds it)."""

from pipeline.vendors.registry import Vendor

VENDOR = Vendor(
    "qlik_cloud", added=1, kind="push",
    ingest_help="Receive Qlik Cloud webhooks (reload finished) into raw.qlik_cloud.",
    ingest_command="pipeline.vendors.qlik_cloud.commands:ingest",
    simulate_command="pipeline.vendors.qlik_cloud.commands:simulate",
    run_command="pipeline.vendors.qlik_cloud.commands:run_arguments",
    demo_processes="pipeline.vendors.qlik_cloud.commands:demo_processes",
    hostile=({"specversion": "1.0", "type": "com.qlik.v1.reload.finished", "data": "not an object"},),
    bench="pipeline.bench.workload:_qlik_cloud_run",
    demo_secrets=(("JOBSTREAM_QLIK_WEBHOOK_SECRET", "demo-webhook-secret"),),  # a local demo's own, on loopback only
    role_names=("qlik-cloud-receiver",),
)
