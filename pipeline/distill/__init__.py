"""Stage two: train a student from the explanation cache alone (the teacher is never loaded).

``objectives`` holds one class per explanation family (the student's forward and its
explanation term), ``trainer`` the distillation loss on the shared training loop
(:mod:`pipeline.training`), ``job`` the whole ``egkd distill``: read and check the
cache, build the student, train, evaluate, save. The loss functions are in
:mod:`pipeline.losses`; cached rows become student batches in :mod:`pipeline.cache.project`.
"""
