"""Container tools: uptime, free, top, df and loadavg that know they run in a container.

Installed in Dockyard base images as /usr/local/bin/{uptime,free,top,df,loadavg},
ahead of /usr/bin on PATH. Standard library only (they run on the image's
python3). See tools/README.md for which tool a container needs and why.
"""
