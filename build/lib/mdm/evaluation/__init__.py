"""Evaluation: the referee's scores of every task, figures, and the paper's tables."""

# The suites of ``mdm eval`` (mdm.evaluation.suites); here so that the command line can list them without
# importing the samplers.
SUITES = ("shapesworld", "digits", "moving-digits", "multiple-choice")
