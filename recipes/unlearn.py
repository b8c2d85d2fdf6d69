"""Unlearn a forget set from a causal language model: a thin shim over `hf_unlearn.scripts.unlearn`.

    python recipes/unlearn.py                       # the embedded default job (= hf-unlearn train)
    python recipes/unlearn.py --config recipes/configs/yi-6b/arxiv/ga.yaml --learning_rate 1e-5
    accelerate launch --config_file recipes/accelerate/zero3.yaml recipes/unlearn.py --config recipes/configs/yi-6b/arxiv/ga.yaml
    torchrun --nproc_per_node 8 recipes/unlearn.py --config recipes/configs/yi-6b/arxiv/ga.yaml --deepspeed recipes/deepspeed/zero3.json

The script itself ships with the package (`hf-unlearn train`, `python -m hf_unlearn.scripts.unlearn`,
`accelerate launch -m hf_unlearn.scripts.unlearn`); see its docstring for the steps and exit statuses.
"""

from hf_unlearn.scripts.unlearn import main

if __name__ == "__main__":
    from hf_unlearn.distributed import finish_distributed

    main()
    finish_distributed()
