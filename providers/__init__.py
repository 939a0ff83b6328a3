"""Video and image providers behind one small interface. Providers know nothing of chat."""
