"""``python tools/data/gen_class_embeddings.py``: entry point; the logic (and ``--help``) is in
:mod:`ovkit.clip.gen_class_embeddings`."""
from ovkit.clip.gen_class_embeddings import main

if __name__ == '__main__':
    main()
