"""Training: the loop and what finetune, distill and recovery (prune, simplify) put around it.

    config.py      TrainConfig (flags finetune and distill share), DistillConfig and its loss
                   Weights; a run's fingerprint; `finish` (best weights -> the output directory)
    loop.py        the accelerate training loop: eval, best checkpoint, early stop, hooks
    checkpoint.py  the resumable checkpoint the loop writes and reads back
    task.py        labelled task data, batches, task loss and dev metrics for the loop (`fit`)
    batches.py     tokenization (cached), length-bucketed order, padded batches
    losses.py      distillation loss terms and the combined loss (`make_loss`)
    students.py    layer maps, students cut or narrowed from a teacher, the Student wrapper
    distill.py     a distillation run (`train_student`), and `recover` for prune/simplify
    lowbit.py      qat and binarize runs (distillation with low-bit layers, or direct), their Configs

Nothing here imports edgeslim.steps; steps call in.
"""
