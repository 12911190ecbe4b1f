"Packaging for deepcluster_nb: metadata and requirements are read from settings.ini (nbdev 2)."
from configparser import ConfigParser
import shlex
import setuptools

cfg = ConfigParser(delimiters=["="])
cfg.read("settings.ini", encoding="utf-8")
c = cfg["DEFAULT"]

setuptools.setup(
    name=c["lib_name"], version=c["version"], description=c["description"],
    author=c["author"], author_email=c["author_email"], license="Apache-2.0",
    url=c["git_url"], keywords=c["keywords"].split(),
    packages=setuptools.find_packages(include=[c["lib_name"], c["lib_name"] + ".*"]),
    python_requires=">=" + c["min_python"],
    install_requires=shlex.split(c.get("requirements", "")),
    extras_require={"dev": shlex.split(c.get("dev_requirements", ""))},
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    entry_points={"nbdev": [f"{c['lib_name']}={c['lib_name']}._modidx:d"]},
    zip_safe=False,
)
