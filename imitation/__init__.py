"""mirrorhall.imitation"""
