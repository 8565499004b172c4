"""Competition entry point (the image runs `python main.py --input_path in.jsonl --output_path out.jsonl`).

A thin wrapper: everything lives in `ftllm.infer.submission`, which reuses the predict stage.
"""
from ftllm.infer.submission import main

if __name__ == "__main__":
    main()
