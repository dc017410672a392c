"""bertjax: functional Flax BERT and pure-function compression methods."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy (PEP 562): `import bertjax.paths` stays light, and `python -m bertjax.predict`
    # does not find its module already imported by the package (runpy's RuntimeWarning).
    if name == "Predictor":
        from bertjax.predict import Predictor

        return Predictor
    raise AttributeError(f"module 'bertjax' has no attribute {name!r}")
