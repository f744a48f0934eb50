"""Pretraining: MLM (whole-word masking), LM and UniLM from raw text, on one device or
on ``keras.distribution`` (JAX). One job per module:

corpus.py        raw text -> sentences -> packed rows -> numpy shards (parallel, atomic);
                 ``build_vocab`` (a Chinese character vocabulary with ``##`` pieces)
objectives.py    mlm / lm / unilm examples, masks keyed by the example's global index
loader.py        shuffled, resumable, prefetched batches streamed from the shards
distribution.py  DataParallel / ModelParallel (LayoutMap for every family), multi-host
checkpoint.py    atomic training checkpoints (model, optimizer, step, data position)
train.py         ``pretrain(...)``: model, optimizer, loop, progress, CSV log, export
cli.py           ``kerasformer pretrain`` and ``kerasformer vocab``
"""
from kerasformer.pretraining.corpus import build_shards, build_vocab
from kerasformer.pretraining.objectives import OBJECTIVES, Objective

__all__ = ["OBJECTIVES", "Objective", "build_shards", "build_vocab", "pretrain"]


def pretrain(*args, **kwargs):
    """See :func:`kerasformer.pretraining.train.pretrain` (imported lazily: it needs Keras)."""
    from kerasformer.pretraining.train import pretrain as run

    return run(*args, **kwargs)
