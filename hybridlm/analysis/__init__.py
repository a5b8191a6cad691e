"""Analysis: the cost of serving a model (accounting.py: exact accounting + roofline model on hardware.py's chips;
cost_report.py: its tables, plot, article and JSON report), evaluations (evals.py), the family comparison
(compare.py, written up by report.py) and the lm-evaluation-harness adapter (lm_eval_adapter.py)."""
