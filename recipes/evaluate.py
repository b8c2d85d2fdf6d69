"""Evaluate checkpoints (before / after unlearning): a thin shim over `hf_unlearn.scripts.evaluate`.

    python recipes/evaluate.py                      # the embedded default job's original model (= hf-unlearn eval)
    python recipes/evaluate.py --model_name_or_path <original> --checkpoints outputs/unlearned --labels before after \
        --forget_data forget.jsonl --approximate_data unseen.jsonl --max_length 4096 --output_dir outputs/evaluation

See `hf_unlearn.scripts.evaluate` for every option and the outputs.
"""

from hf_unlearn.scripts.evaluate import main

if __name__ == "__main__":
    main()
