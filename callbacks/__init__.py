"""Lightning callbacks of lightning-nas (a top-level package of the `lightning-nas` distribution).

Callbacks arrive with the components that need them (latent-space map, BIC curve, architecture plots).
"""
