"""The Flask example's worker, built from the same config as the web app:

    celery -A examples.flask_app.worker worker --pool threads --concurrency 20 --loglevel INFO
"""

from . import create_app

flask_app = create_app()
app = flask_app.extensions["smsdispatch"]     # the SmsApp smsdispatch.configure built from app.config
