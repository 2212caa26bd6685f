import torch

# One torch thread per test process: on a loaded 2-core machine two threads
# made fits several times slower.
torch.set_num_threads(1)
