"""Graph recommenders trained with BPR and a negative sampler: LightGCN and MF."""
