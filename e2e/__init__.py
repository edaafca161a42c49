"""Real-cluster end-to-end suite (`make e2e`); see conftest.py for its environment variables."""
