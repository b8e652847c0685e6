"""The hostile-input suite (issue 17): see cases.py (the cases), run_case.py (one case in its
own process), harness.py (the parent: timeouts, verdicts), __main__.py (the summary:
``python -m tests.hostile``) and tests/test_hostile.py (the pytest entry)."""
