"""Figures of the evaluation report, one module per figure family (PNG, matplotlib Agg)."""
