# Inlaid GPU worker
