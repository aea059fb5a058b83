"""A map-style dataset over an in-memory list of rows (gate rows, reasoner steps): the Trainer's input."""

from torch.utils.data import Dataset


class ListDataset(Dataset):
    def __init__(self, rows: list):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        return self.rows[index]
