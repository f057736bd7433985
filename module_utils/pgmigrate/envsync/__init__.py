"""Environment sync between environments, table by table by policy, with masking of personal data."""
