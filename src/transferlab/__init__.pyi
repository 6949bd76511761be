# Types of the package's lazily loaded names (see __init__.py): what type checkers and
# editors see for ``import transferlab as tl``.
from transferlab.api import (
    Audit as Audit,
)
from transferlab.api import (
    CropResult as CropResult,
)
from transferlab.api import (
    Evaluation as Evaluation,
)
from transferlab.api import (
    ImageLike as ImageLike,
)
from transferlab.api import (
    Leaderboard as Leaderboard,
)
from transferlab.api import (
    LRFind as LRFind,
)
from transferlab.api import (
    Model as Model,
)
from transferlab.api import (
    Predictions as Predictions,
)
from transferlab.api import (
    Run as Run,
)
from transferlab.api import (
    audit as audit,
)
from transferlab.api import (
    build_config as build_config,
)
from transferlab.api import (
    compare as compare,
)
from transferlab.api import (
    crop_images as crop_images,
)
from transferlab.api import (
    load as load,
)
from transferlab.api import (
    lr_find as lr_find,
)
from transferlab.api import (
    models as models,
)
from transferlab.api import (
    resume as resume,
)
from transferlab.api import (
    train as train,
)
from transferlab.errors import (
    BundleError as BundleError,
)
from transferlab.errors import (
    ConfigError as ConfigError,
)
from transferlab.errors import (
    DatasetError as DatasetError,
)
from transferlab.errors import (
    ModelError as ModelError,
)
from transferlab.errors import (
    TransferlabError as TransferlabError,
)
from transferlab.errors import (
    WeightsError as WeightsError,
)

__version__: str
__all__: list[str]
