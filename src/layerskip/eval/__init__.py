"""lm-evaluation-harness integration: the `layerskip` lm-eval model (`eval.lm`), batched scoring at
any exit layer (`eval.scoring`), local tasks (`eval/tasks`) and the runner behind `layerskip eval`
(`eval.harness`). Nothing here imports lm-eval until it is used."""
