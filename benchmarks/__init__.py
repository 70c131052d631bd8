"""Speed and memory measurements of digitrec against plain PyTorch loops (`make bench`)."""
