"""Readers of published data files, safe against files that would run code (:mod:`.files`: pickles, ``.npy``,
``.npz``, ``.mat``; :mod:`.cifar`: the CIFAR batches). The data modules (:mod:`datamodules`) load data through them;
nothing here is a Lightning object (torchgeo's datasets/datamodules split)."""
