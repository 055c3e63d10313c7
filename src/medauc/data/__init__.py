"""The data stage: reading images (``images``), finding them (``sources``), auditing them
(``audit``), splitting them (``split``) and the manifest that hands them on (``manifest``);
``command`` is ``medauc prepare``. ``phantom/`` writes the built-in synthetic data set."""
