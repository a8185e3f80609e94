"""Helper of ``tests/test_ccnf.py``: one epoch of a tiny CCNF under DDP on two CPU processes (gloo), where only rank 1's
solve of batch 1 is stiff (it really hits the solver's step limit). Each rank writes ``OUT/rank<r>.pt``: the batches it
skipped, its counter, its parameters after every batch and at the end.

    python tests/ccnf_ddp_stiff.py OUT        (Lightning starts rank 1 by running this script again)
"""

import os
import sys
import threading
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_nas.models.ccnf import CCNFModule

STIFF_RANK, STIFF_BATCH = 1, 1
HANG_S = 90  # four tiny batches take seconds; a rank still training after this is stuck in a collective


def _hung() -> None:
    print(f"rank {os.environ.get('LOCAL_RANK', 0)}: training still running after {HANG_S} s: hung", flush=True)
    os._exit(124)


class StiffOnOneRank(CCNFModule):
    """Rank 1 solves batch 1 with a step limit of 0 (``max_num_steps``): torchdiffeq gives up at its first step and
    the module sees a genuine :class:`StiffSolveError`; every other solve is unchanged."""

    def on_train_start(self) -> None:  # after the rendezvous, whose time depends on the machine's load
        self.skipped_batches: list[int] = []
        self.params_after: list[dict[str, torch.Tensor]] = []
        self.watchdog = threading.Timer(HANG_S, _hung)
        self.watchdog.daemon = True
        self.watchdog.start()

    def on_train_end(self) -> None:
        self.watchdog.cancel()

    def on_train_batch_start(self, batch, batch_idx) -> None:
        stiff = self.global_rank == STIFF_RANK and batch_idx == STIFF_BATCH
        self.flow.max_num_steps = 0 if stiff else self.hparams.max_num_steps
        self._skipped_before = self.stiff_skipped

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.stiff_skipped > self._skipped_before:
            self.skipped_batches.append(batch_idx)
        self.params_after.append({n: p.detach().clone() for n, p in self.named_parameters()})


def main(out: Path) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    model = StiffOnOneRank(latent_dim=8, cond_dim=4, hidden=16, layers=2, atol=1e-4, rtol=1e-4, gen_samples=0)
    gen = torch.Generator().manual_seed(0)  # the same data set on both ranks; the DistributedSampler splits it
    loader = DataLoader(TensorDataset(torch.randn(64, 8, generator=gen), torch.randn(64, 4, generator=gen)),
                        batch_size=8)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp",
                        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=out, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=loader)
    torch.save({"skipped": model.skipped_batches, "stiff_skipped": model.stiff_skipped,
                "global_step": trainer.global_step, "params_after": model.params_after,
                "params": {n: p.detach().clone() for n, p in model.named_parameters()}},
               out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
