"""The eval stage and the scoring it shares with serving: parsing, scoring, generation, BFCL, reports."""
