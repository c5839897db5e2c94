"""informatica: normalize.py (pure: raw document -> JobEvents); ingest.py and simulator.py; this file declares the vendor once (the registry finds it)."""

from pipeline.vendors.registry import Vendor

VENDOR = Vendor(
    "informatica", added=5, kind="pull",
    ingest_help="Poll Informatica CIH events by CUSTOM time window (5 calls a minute) into raw.informatica.",
    simulate_help="Serve Informatica CIH (POST /dih-console/api/v1/events, 5 calls a minute) with publications and subscriptions, until Ctrl-C.",
    settings="pipeline.vendors.informatica.ingest:InformaticaSettings",
    simulator="pipeline.vendors.informatica.simulator:demo_simulator",
    demo_faults="error=0.05,storm=0.03,retry_after_s=1,malformed=0.02,duplicate=0.1,reorder=0.3",
    demo_config=(("user", "iics-user"), ("source", "cih-demo"), ("poll_interval_s", 12), ("child_grace_s", 600)),
    demo_secrets=(("JOBSTREAM_INFORMATICA_PASSWORD", "iics-password"),),
    hostile=({"eventId": None, "eventStatus": ["Complete"]},),
    bench="pipeline.bench.workload:_informatica_run",
)
