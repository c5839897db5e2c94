"""zuora: normalize.py (pure: raw document -> JobEvents); its ingestor and simulator join it here."""
