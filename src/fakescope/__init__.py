"""fakescope: tell whether an image was made or edited by a generative model.

    from fakescope import load_detector
    det = load_detector()                 # the shipped default, runs offline
    det.predict(["photo.jpg"])            # -> [Result(path, sha256, score, label, threshold, model, error)]
"""
__version__ = "0.1.0"


def __getattr__(name):  # keep `import fakescope` light: torch loads only when a detector is asked for
    if name in ("load_detector", "Detector", "Result"):
        from . import detector
        return getattr(detector, name)
    raise AttributeError(name)


__all__ = ["Detector", "Result", "load_detector", "__version__"]
