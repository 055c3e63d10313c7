"""The chosen model in use: ``medauc predict`` (new scans), ``medauc export`` (ONNX) and the model card.

- :mod:`~medauc.deploy.chosen`: which trained model of a run, its seed and its operating threshold;
- :mod:`~medauc.deploy.inputs`: new image files (PNG/JPEG, DICOM, NIfTI) read exactly as ``prepare``
  and the training cache read the run's own images, without patient identifiers;
- :mod:`~medauc.deploy.predict`: the ``predict`` command;
- :mod:`~medauc.deploy.onnx_export`: the ONNX file, its metadata and its check against PyTorch;
- :mod:`~medauc.deploy.card`: the model card (Markdown) from the run's files;
- :mod:`~medauc.deploy.export`: the ``export`` command.
"""
