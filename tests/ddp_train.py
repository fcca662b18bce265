"""Run by test_distributed.py under torchrun (or plain python): train a student on 8 rows, 3 steps."""

import sys

from kdqat.train import TrainOptions, train

model_dir, teacher_dir, glue_dir, out = sys.argv[1:5]
train(TrainOptions(task="rte", output_dir=out, model=model_dir, teacher=teacher_dir, data_dir=glue_dir,
                   max_train_samples=8, max_eval_samples=8, batch_size=8, max_steps=3, eval_steps=3,
                   logging_steps=1, progress=False))
