"""Evaluation: the referee's scores of every task, figures, and (issue 6) the paper's tables."""
