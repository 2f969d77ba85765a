"""Simple non-neural baselines fitted in closed form (MostPop, ItemKNN, EASE)."""
