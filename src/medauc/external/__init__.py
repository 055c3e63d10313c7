"""External test sets (``evaluate.external``): another hospital's images, predicted by every trained model.

:mod:`~medauc.external.spec` reads and checks the settings (no heavy imports), :mod:`~medauc.external.stage`
reads each set, audits it against the training data (:mod:`~medauc.external.audit`) and predicts it,
and :mod:`~medauc.external.results` evaluates the predictions inside the evaluate stage: Table 1's
metrics, the change from the internal test set, the ranking, calibration and the validation-chosen
threshold, per site.
"""
