"""Adversarial inputs: the attack settings (:mod:`.config`) in pixel units (:mod:`.space`), FGSM and PGD
(:mod:`.gradient`) or any torchattacks class (:mod:`.torchattacks_bridge`) behind one :func:`~.attacks.attack`, and
clean vs attacked curves on the same draws (:mod:`.curves`)."""
