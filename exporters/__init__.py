"""rlserve.exporters: turn a training checkpoint into a self-contained, verified artifact.

``load_artifact`` (the only way serving opens an artifact) must stay importable without the
training package; only the export path imports training.
"""

__all__: list[str] = []
