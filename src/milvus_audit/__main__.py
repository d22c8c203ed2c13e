import sys

from milvus_audit.cli import main

sys.exit(main())
