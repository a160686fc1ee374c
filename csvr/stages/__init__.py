"""The stages of a CSVR trial: what each one is (`table`), where its output lives (`store`), how it is computed
(`pretrain`, `finetune`). `csvr.pipeline.run_trial` runs them in order."""
