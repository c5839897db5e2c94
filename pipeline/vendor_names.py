"""The vendors' names, alone, so that settings can read per-vendor variables without
importing the vendor modules (and everything they import)."""

VENDOR_NAMES: tuple[str, ...] = ("qlik_cloud", "qlik_qrs", "zuora", "truenas", "informatica")
