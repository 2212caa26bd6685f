"""Threads, interrupts and denormals: the process state a training run sets."""

import contextlib
import signal
import threading

import torch

#: Below this many FLOPs per step, training runs on one thread: measured here,
#: a second thread slowed batch-1 epochs by 10-20 % and sped up 80 MFLOP steps
#: by 30 %.
SINGLE_THREAD_FLOPS = 10e6
#: ... and fewer parameters than this: Adam's update of 20 lockstep replicas of a
#: UCI hypernetwork (890,000 parameters) took 177 us on two threads, 300 on one; from
#: two replicas (89,000) on, two threads were faster.
SINGLE_THREAD_PARAMETERS = 80_000


def step_flops(model, batch_size):
    """Floating-point operations of one training step (forward and backward).

    Each multiply-add of the forward pass is matched by two in the backward
    pass (gradients of the parameters and of the inputs): 3 x 2 FLOPs.
    """
    generator = model.weight_generator
    sizes = [generator.noise_dim, *generator.hidden_sizes]
    hidden = sum(n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    return 6 * batch_size * (generator.code_size * generator.n_main_parameters + hidden)


@contextlib.contextmanager
def threads_for(flops_per_step, n_parameters=0):
    """Use one thread inside the block for small steps, then restore the count."""
    previous = torch.get_num_threads()
    small = flops_per_step < SINGLE_THREAD_FLOPS and n_parameters < SINGLE_THREAD_PARAMETERS
    single = small and previous > 1
    if single:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if single:
            torch.set_num_threads(previous)


@contextlib.contextmanager
def interrupts_collected():
    """Record Ctrl-C inside the block instead of raising it where it lands.

    Yields a list that receives one entry per Ctrl-C, for the block to check
    where stopping is safe: between chunks of steps, never between a step's
    gradient and its update or inside torch code.  Outside the
    main thread, or where SIGINT is not Python's default handler, nothing
    changes and the list stays empty.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield []
        return
    received = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def flushed_denormals():
    """Flush denormal floats to zero inside the block, then restore the mode.

    Adam's running averages decay into denormals where ReLU or dropout make
    gradients exactly zero, and denormal arithmetic is many times slower.
    """
    probe = torch.tensor([1e-39], dtype=torch.float32)
    previous = bool((probe * 1.0).item() == 0.0)
    changed = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if changed:
            torch.set_flush_denormal(previous)
