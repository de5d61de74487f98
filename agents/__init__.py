"""mirrorhall.agents"""
