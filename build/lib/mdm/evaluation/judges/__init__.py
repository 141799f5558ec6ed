"""The judges: what reads a generated image or text and says what it shows, so that a metric can score it.

* :mod:`~mdm.evaluation.judges.referee` -- ShapesWorld's exact referee: parses a scene from pixels and a caption
  from words, and answers questions from the parsed objects;
* :mod:`~mdm.evaluation.judges.shapes_classifier`, :mod:`~mdm.evaluation.judges.digit_classifier` -- small
  feature networks trained on the built-in data, the project's stand-ins for Inception in FID, IS and
  precision / recall.
"""
