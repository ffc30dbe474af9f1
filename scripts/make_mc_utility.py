"""Write ``src/safetydrift/datasets/data/mc_utility.jsonl``: the log-likelihood multiple-choice utility set.

Every item is written by us (the tables below) or derived from them by a seeded generator; nothing is copied
from a benchmark. Six skills: ``arithmetic`` (generated), ``knowledge``, ``commonsense``, ``reading`` (short
passages assembled from our name/object tables), ``science`` and ``vocabulary``. Each item has 4 choices, one
correct; the correct position is shuffled with a fixed seed, so chance is 25% for every skill.

Kept apart from the alignment data on purpose: a question that ``general_qa.jsonl`` or the benign-task
generator teaches (``align`` fine-tunes on both) is refused here (capitals of the benign-task countries, the
general-QA questions themselves), so an aligned model does not score higher for having been trained on it.

    python scripts/make_mc_utility.py           # (re)write the file
    python scripts/make_mc_utility.py --check   # exit 1 if the file differs from what this script writes
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "safetydrift" / "datasets" / "data" / "mc_utility.jsonl"
SEED = "safetydrift.mc_utility:v1"

# ---------------------------------------------------------------------------------------------- knowledge
# capitals of countries NOT in benign_task.CAPITALS nor general_qa (the align step trains on those)
CAPITALS = [
    ("the Netherlands", "Amsterdam"), ("Iceland", "Reykjavik"), ("Vietnam", "Hanoi"), ("the Philippines", "Manila"),
    ("Indonesia", "Jakarta"), ("the Czech Republic", "Prague"), ("Colombia", "Bogota"), ("Venezuela", "Caracas"),
    ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Saudi Arabia", "Riyadh"), ("Ukraine", "Kyiv"),
    ("New Zealand", "Wellington"), ("Pakistan", "Islamabad"), ("Bangladesh", "Dhaka"), ("Ethiopia", "Addis Ababa"),
    ("Ghana", "Accra"), ("Jamaica", "Kingston"), ("Lebanon", "Beirut"), ("Syria", "Damascus"),
    ("Afghanistan", "Kabul"), ("Nepal", "Kathmandu"), ("Malaysia", "Kuala Lumpur"), ("Romania", "Bucharest"),
    ("Bulgaria", "Sofia"), ("Serbia", "Belgrade"), ("Croatia", "Zagreb"), ("Ecuador", "Quito"),
    ("Uruguay", "Montevideo"), ("Scotland", "Edinburgh"), ("Wales", "Cardiff"), ("Senegal", "Dakar"),
    ("Zimbabwe", "Harare"), ("Uganda", "Kampala"), ("Qatar", "Doha"), ("Sri Lanka", "Colombo"),
]
CONTINENTS = ["Europe", "Asia", "Africa", "South America", "North America", "Oceania"]
COUNTRY_CONTINENT = [
    ("Brazil", "South America"), ("Colombia", "South America"), ("Peru", "South America"), ("Chile", "South America"),
    ("Venezuela", "South America"), ("Uruguay", "South America"), ("Nigeria", "Africa"), ("Ghana", "Africa"),
    ("Morocco", "Africa"), ("Ethiopia", "Africa"), ("Tanzania", "Africa"), ("South Africa", "Africa"),
    ("Senegal", "Africa"), ("Japan", "Asia"), ("Vietnam", "Asia"), ("Thailand", "Asia"), ("India", "Asia"),
    ("Mongolia", "Asia"), ("Nepal", "Asia"), ("South Korea", "Asia"), ("France", "Europe"), ("Poland", "Europe"),
    ("Sweden", "Europe"), ("Portugal", "Europe"), ("Greece", "Europe"), ("Ireland", "Europe"),
    ("Canada", "North America"), ("Mexico", "North America"), ("the United States", "North America"),
    ("Australia", "Oceania"), ("New Zealand", "Oceania"), ("Fiji", "Oceania"),
]
LANGUAGES = [
    ("Germany", "German"), ("France", "French"), ("Italy", "Italian"), ("Japan", "Japanese"), ("China", "Chinese"),
    ("Russia", "Russian"), ("Portugal", "Portuguese"), ("Greece", "Greek"), ("Poland", "Polish"),
    ("Turkey", "Turkish"), ("the Netherlands", "Dutch"), ("Sweden", "Swedish"), ("South Korea", "Korean"),
    ("Spain", "Spanish"), ("Thailand", "Thai"), ("Vietnam", "Vietnamese"), ("Finland", "Finnish"),
]
# (question, correct, three wrong answers): written by us
KNOWLEDGE = [
    ("How many days are there in a normal year?", "365", "100", "52", "12"),
    ("How many weeks are there in a year?", "52", "12", "7", "365"),
    ("How many seconds are in a minute?", "60", "100", "24", "12"),
    ("How many months are in a year?", "12", "10", "7", "52"),
    ("How many legs does a dog have?", "four", "two", "six", "eight"),
    ("How many wheels does a bicycle have?", "two", "four", "three", "six"),
    ("How many wheels does a tricycle have?", "three", "two", "four", "one"),
    ("How many sides does a pentagon have?", "five", "three", "four", "eight"),
    ("How many sides does an octagon have?", "eight", "six", "five", "ten"),
    ("How many hours are in half a day?", "12", "6", "24", "60"),
    ("What day comes after Monday?", "Tuesday", "Sunday", "Friday", "Thursday"),
    ("What day comes before Saturday?", "Friday", "Sunday", "Monday", "Wednesday"),
    ("What month comes after March?", "April", "February", "June", "October"),
    ("What month comes before December?", "November", "January", "July", "March"),
    ("What is the last month of the year?", "December", "January", "June", "August"),
    ("Which season is usually the coldest?", "winter", "summer", "spring", "autumn"),
    ("Which season is usually the hottest?", "summer", "winter", "autumn", "spring"),
    ("What color is a ripe banana?", "yellow", "blue", "purple", "black"),
    ("What color is grass?", "green", "red", "white", "orange"),
    ("What color is the sky on a clear day?", "blue", "green", "brown", "pink"),
    ("What color is snow?", "white", "black", "green", "red"),
    ("What color is coal?", "black", "white", "yellow", "pink"),
    ("What color are most tomatoes when ripe?", "red", "blue", "white", "purple"),
    ("What color is a carrot?", "orange", "blue", "black", "purple"),
    ("What does a clock show?", "the time", "the weather", "the distance", "the price"),
    ("What does a map show?", "places", "songs", "smells", "prices"),
    ("Which animal is known as the king of the jungle?", "the lion", "the mouse", "the frog", "the sheep"),
    ("Which animal has a very long neck?", "the giraffe", "the pig", "the rabbit", "the mouse"),
    ("Which animal has black and white stripes?", "the zebra", "the elephant", "the camel", "the goat"),
    ("Which animal has a trunk?", "the elephant", "the horse", "the cat", "the duck"),
    ("Which animal is famous for carrying water in its hump?", "the camel", "the cow", "the wolf", "the owl"),
    ("What do cows drink?", "water", "oil", "juice", "coffee"),
    ("What sound does a dog make?", "bark", "moo", "quack", "meow"),
    ("What sound does a cat make?", "meow", "bark", "moo", "neigh"),
    ("What sound does a duck make?", "quack", "bark", "roar", "moo"),
    ("What sound does a cow make?", "moo", "quack", "bark", "hiss"),
    ("Where do fish live?", "in water", "in trees", "in the desert", "in the clouds"),
    ("What is the opposite direction of north?", "south", "east", "west", "up"),
    ("In which direction does the sun rise?", "east", "west", "north", "south"),
    ("In which direction does the sun set?", "west", "east", "north", "south"),
    ("What is the name of the planet we live on?", "Earth", "Mars", "Venus", "Jupiter"),
    ("What shines in the sky at night and has phases?", "the Moon", "the Sun", "a rainbow", "a cloud"),
    ("What do you call a house made of snow blocks?", "an igloo", "a tent", "a castle", "a barn"),
    ("What is the name of the toy that flies on a string in the wind?", "a kite", "a yo-yo", "a doll", "a ball"),
    ("Which sport uses a bat and a ball and has innings?", "baseball", "swimming", "boxing", "skiing"),
    ("Which sport is played by hitting a small ball into holes on a course?", "golf", "rugby", "volleyball", "judo"),
    ("Which game is played on a board with kings, queens and knights?", "chess", "tennis", "darts", "poker"),
    ("What instrument has black and white keys?", "a piano", "a drum", "a trumpet", "a flute"),
    ("What do you call the person who flies a plane?", "a pilot", "a chef", "a farmer", "a dentist"),
    ("What do you call the person who cooks in a restaurant?", "a chef", "a pilot", "a judge", "a miner"),
    ("Who delivers letters to houses?", "a mail carrier", "a baker", "a surgeon", "a painter"),
    ("Who puts out fires?", "firefighters", "bakers", "tailors", "librarians"),
    ("Who teaches children at school?", "teachers", "plumbers", "sailors", "farmers"),
    ("What is the largest city in the United States by population?", "New York", "Boston", "Denver", "Miami"),
    ("What is the Statue of Liberty's city?", "New York", "Paris", "London", "Sydney"),
    ("In which city is Big Ben?", "London", "Madrid", "Tokyo", "Cairo"),
    ("In which city is the Colosseum?", "Rome", "Oslo", "Dublin", "Lima"),
    ("In which country is the city of Sydney?", "Australia", "Canada", "Brazil", "Sweden"),
    ("In which country is the city of Toronto?", "Canada", "Australia", "Spain", "India"),
    ("In which country is the city of Mumbai?", "India", "Mexico", "France", "Norway"),
    ("In which country is the city of Barcelona?", "Spain", "Japan", "Kenya", "Finland"),
    ("In which country is the city of Munich?", "Germany", "Egypt", "Chile", "Canada"),
    ("In which country is the city of Osaka?", "Japan", "Italy", "Peru", "Ireland"),
    ("In which country is the city of Venice?", "Italy", "Russia", "India", "Cuba"),
    ("In which country is the city of Rio de Janeiro?", "Brazil", "Poland", "Turkey", "Norway"),
    ("What is the currency of the United States?", "the dollar", "the yen", "the rupee", "the peso"),
    ("What is the currency of most countries in the European Union?", "the euro", "the yen", "the rupee", "the dollar"),
    ("What is the currency of India?", "the rupee", "the euro", "the yen", "the pound"),
]

# ---------------------------------------------------------------------------------------------- commonsense
COMMONSENSE = [
    ("Where do you keep milk so that it stays cold?", "in the fridge", "in the oven", "on the roof", "in the bathtub"),
    ("What do you use to cut paper?", "scissors", "a spoon", "a pillow", "a towel"),
    ("What do you use to dry yourself after a shower?", "a towel", "a fork", "a hammer", "a book"),
    ("What do you wear on your feet?", "shoes", "hats", "gloves", "scarves"),
    ("What do you wear on your hands when it is cold?", "gloves", "socks", "boots", "belts"),
    ("What do you use to open a locked door?", "a key", "a cup", "a sock", "a plate"),
    ("What do you use to eat soup?", "a spoon", "a knife", "a comb", "a pencil"),
    ("What do you need to write on paper?", "a pen", "a fork", "a pillow", "a shoe"),
    ("What do you use to brush your teeth?", "a toothbrush", "a hairbrush", "a broom", "a paintbrush"),
    ("What do you sleep on at night?", "a bed", "a stove", "a sink", "a desk"),
    ("Where do people usually cook food at home?", "in the kitchen", "in the garage", "in the garden", "in the attic"),
    ("Where do people usually take a shower?", "in the bathroom", "in the kitchen", "in the car", "in the hallway"),
    ("Where do you go to borrow books?", "a library", "a bakery", "a gas station", "a zoo"),
    ("Where do you go to buy bread?", "a bakery", "a library", "a bank", "a dentist"),
    ("Where do you go when you are very sick?", "a hospital", "a cinema", "a stadium", "a beach"),
    ("Where do you go to see many wild animals in cages and pens?", "a zoo", "a bank", "a post office", "a school"),
    ("Where do planes take off and land?", "at an airport", "at a library", "at a farm", "at a museum"),
    ("Where do trains stop to let people on?", "at a station", "at a pool", "at a church", "at a bakery"),
    ("Where do children go to learn to read and write?", "school", "a prison", "a factory", "a casino"),
    ("What do you do when you are tired?", "sleep", "run a race", "shout", "jump"),
    ("What do you do when you are hungry?", "eat", "sleep", "swim", "sing"),
    ("What do you do when you are thirsty?", "drink water", "eat salt", "run fast", "read a book"),
    ("What do people usually do when something is very funny?", "laugh", "cry", "sleep", "sneeze"),
    ("What should you do before crossing a busy street?", "look both ways", "close your eyes", "run without looking",
     "sit down"),
    ("What happens to ice when it is left in the sun?", "it melts", "it grows", "it freezes more", "it turns to wood"),
    ("What happens to bread if you leave it in the toaster too long?", "it burns", "it freezes", "it gets wet",
     "it grows"),
    ("What happens to a plant if you never water it?", "it dies", "it grows faster", "it turns blue", "it sings"),
    ("If it is raining, what should you take outside to stay dry?", "an umbrella", "a fan", "sunglasses", "a spoon"),
    ("If you want to see in a dark room, what should you turn on?", "the light", "the tap", "the oven", "the radio"),
    ("If a glass falls on a stone floor, what will probably happen?", "it breaks", "it bounces up high", "it melts",
     "it floats"),
    ("What do you put on a letter before you mail it?", "a stamp", "a sticker of a cat", "a coin", "a leaf"),
    ("What do you need to pay for things in a shop?", "money", "water", "a pillow", "a map"),
    ("What do you usually do at a birthday party?", "eat cake", "wash the car", "pay taxes", "take an exam"),
    ("What do you call the meal eaten in the morning?", "breakfast", "dinner", "supper", "dessert"),
    ("What do you call the meal eaten in the evening?", "dinner", "breakfast", "brunch", "a snack"),
    ("What keeps your head warm in winter?", "a hat", "a sandal", "a belt", "a ring"),
    ("What do you use to call a friend who is far away?", "a phone", "a broom", "a cup", "a ladder"),
    ("What do you use to carry books to school?", "a backpack", "a bucket", "a frying pan", "a helmet"),
    ("What do you use to sweep the floor?", "a broom", "a fork", "a blanket", "a guitar"),
    ("What do you use to boil water?", "a kettle", "a pillow", "a shoe", "a notebook"),
    ("What do you use to climb up to a high shelf?", "a ladder", "a spoon", "a towel", "a sock"),
    ("What do you use to take a photo?", "a camera", "a hammer", "a bowl", "a brush"),
    ("What do you put in a vase?", "flowers", "shoes", "rocks", "books"),
    ("What do you fill a swimming pool with?", "water", "sand", "milk", "paper"),
    ("What do you plant to grow a tree?", "a seed", "a coin", "a button", "a nail"),
    ("Why do people wear sunglasses?", "to protect their eyes from bright light", "to hear better", "to stay warm",
     "to run faster"),
    ("Why do people use an alarm clock?", "to wake up on time", "to cook food", "to clean the floor",
     "to water plants"),
    ("Why do people put food in the freezer?", "to keep it from going bad", "to make it hot", "to make it grow",
     "to make it louder"),
    ("Why do people carry an umbrella?", "to stay dry in the rain", "to cook dinner", "to open doors",
     "to see in the dark"),
    ("Why do we wear seat belts in a car?", "to stay safe in a crash", "to drive faster", "to keep warm",
     "to play music"),
    ("A baby is crying because it is hungry. What does it need?", "food", "a hammer", "a newspaper", "homework"),
    ("Tom's shoes are wet and muddy. Where has he probably been walking?", "through puddles", "on a clean carpet",
     "in a library", "on a plane"),
    ("Anna is wearing a swimsuit and carrying a towel. Where is she probably going?", "to the beach", "to a funeral",
     "to a job interview", "to the dentist"),
    ("The ground is white and children are building a snowman. What season is it?", "winter", "summer", "spring",
     "autumn"),
    ("Leaves are falling from the trees and turning orange. What season is it?", "autumn", "spring", "summer",
     "winter"),
    ("It is midnight and the sky is dark. What are most people doing?", "sleeping", "eating lunch",
     "going to school", "sunbathing"),
    ("Sam put on his coat, hat and scarf. What is the weather probably like?", "cold", "very hot", "tropical",
     "humid and steamy"),
    ("The kettle is whistling. What is ready?", "the hot water", "the cake", "the mail", "the car"),
    ("The phone is ringing. What should you do to talk to the caller?", "answer it", "turn off the lights",
     "open the window", "feed the cat"),
    ("Maria dropped her ice cream on the ground. How does she probably feel?", "sad", "proud", "sleepy", "bored"),
    ("Ben won first prize in the race. How does he probably feel?", "happy", "angry", "sick", "lonely"),
    ("The dog is wagging its tail and jumping. How does the dog probably feel?", "happy", "sad", "sleepy", "angry"),
    ("Which is heavier, an elephant or a mouse?", "an elephant", "a mouse", "they weigh the same", "neither"),
    ("Which is bigger, a house or a cup?", "a house", "a cup", "they are the same size", "neither"),
    ("Which is faster, a car or a snail?", "a car", "a snail", "they are equally fast", "neither"),
    ("Which is hotter, fire or ice?", "fire", "ice", "they are equally hot", "neither"),
    ("Which is taller, a tree or a flower?", "a tree", "a flower", "they are the same height", "neither"),
    ("Which can fly, a bird or a fish?", "a bird", "a fish", "both", "neither"),
    ("What do you do with a book?", "read it", "eat it", "wear it", "plant it"),
    ("What do you do with a song?", "sing it", "eat it", "wear it", "paint it"),
    ("What do you do with a chair?", "sit on it", "drink it", "read it", "plant it"),
    ("What do you do with a sandwich?", "eat it", "wear it", "drive it", "read it"),
    ("What do you do with a bicycle?", "ride it", "eat it", "plant it", "wear it"),
    ("What do you do with a coat?", "wear it", "eat it", "read it", "drink it"),
    ("What do you do with a glass of juice?", "drink it", "wear it", "read it", "sit on it"),
]

# ---------------------------------------------------------------------------------------------- science
ANIMAL_KINDS = {
    "a mammal": ["a dog", "a cow", "a horse", "a whale", "a bat", "a tiger", "a rabbit", "a bear", "a monkey",
                 "a dolphin"],
    "a bird": ["a robin", "an eagle", "a penguin", "an owl", "a parrot", "a sparrow", "a pigeon", "a swan",
               "a chicken", "a crow"],
    "a fish": ["a salmon", "a trout", "a shark", "a tuna", "a goldfish", "a cod"],
    "an insect": ["an ant", "a bee", "a butterfly", "a fly", "a beetle", "a mosquito", "a grasshopper"],
    "a reptile": ["a snake", "a lizard", "a crocodile", "a turtle"],
}
SCIENCE = [
    ("What is water made of?", "hydrogen and oxygen", "iron and salt", "sand and sugar", "gold and silver"),
    ("What do plants need from the sun to make food?", "light", "sound", "darkness", "snow"),
    ("What part of a plant takes in water from the soil?", "the roots", "the flowers", "the fruit", "the petals"),
    ("What part of a plant makes seeds?", "the flower", "the root", "the bark", "the soil"),
    ("What do we call water falling from clouds?", "rain", "smoke", "dust", "lava"),
    ("What is ice?", "frozen water", "hot air", "melted rock", "dry sand"),
    ("What is steam?", "water as a gas", "frozen water", "a kind of rock", "a metal"),
    ("What are the three states of matter?", "solid, liquid and gas", "hot, warm and cold", "red, green and blue",
     "north, south and east"),
    ("Is a rock a solid, a liquid or a gas?", "a solid", "a liquid", "a gas", "none of them"),
    ("Is milk a solid, a liquid or a gas?", "a liquid", "a solid", "a gas", "none of them"),
    ("What does a magnet attract?", "iron", "wood", "paper", "glass"),
    ("What do we call animals that eat only plants?", "herbivores", "carnivores", "predators", "fungi"),
    ("What do we call animals that eat only meat?", "carnivores", "herbivores", "plants", "seeds"),
    ("Which organ do we use to think?", "the brain", "the stomach", "the lungs", "the liver"),
    ("Which organ do we use to breathe?", "the lungs", "the heart", "the kidneys", "the stomach"),
    ("Which organ digests food?", "the stomach", "the lungs", "the eyes", "the brain"),
    ("Which sense do we use our ears for?", "hearing", "smell", "taste", "sight"),
    ("Which sense do we use our nose for?", "smell", "hearing", "sight", "touch"),
    ("Which sense do we use our eyes for?", "sight", "taste", "hearing", "smell"),
    ("Which sense do we use our tongue for?", "taste", "sight", "hearing", "balance"),
    ("Where do tadpoles live?", "in water", "in trees", "in deserts", "in caves"),
    ("What do bees collect from flowers?", "nectar", "stones", "leaves", "bark"),
    ("What covers the body of a bird?", "feathers", "scales", "fur", "shells"),
    ("What covers the body of a fish?", "scales", "feathers", "fur", "leaves"),
    ("What covers the body of a bear?", "fur", "feathers", "scales", "shells"),
    ("How do fish breathe underwater?", "with gills", "with lungs", "with feathers", "with roots"),
    ("What do caterpillars eat?", "leaves", "rocks", "metal", "plastic"),
    ("Where does a chick come from?", "an egg", "a seed", "a flower", "a cloud"),
    ("Which is the hottest: the Sun, the Moon or a cloud?", "the Sun", "the Moon", "a cloud", "they are all cold"),
    ("What causes day and night on Earth?", "the Earth spinning", "the Moon melting", "clouds moving",
     "the wind blowing"),
    ("What pulls objects down toward the ground?", "gravity", "magnetism of the Moon", "wind", "sound"),
    ("What travels faster, light or sound?", "light", "sound", "they are equally fast", "neither moves"),
    ("What do we call a scientist who studies stars and planets?", "an astronomer", "a chef", "a banker",
     "a tailor"),
    ("What do we call a scientist who studies animals?", "a zoologist", "a geologist", "an astronomer",
     "a plumber"),
    ("What do we call a scientist who studies plants?", "a botanist", "a pilot", "a banker", "a sailor"),
    ("What does a plant release into the air that we breathe?", "oxygen", "smoke", "salt", "sand"),
    ("What gas do we breathe out?", "carbon dioxide", "helium", "neon", "chlorine"),
    ("What happens to water when it boils?", "it turns into steam", "it turns into ice",
     "it turns into sand", "it turns into oil"),
    ("Which material is a good conductor of electricity?", "copper", "rubber", "wood", "plastic"),
    ("Which material is used to make windows you can see through?", "glass", "brick", "wood", "steel"),
    ("What do we call the path a planet follows around the Sun?", "an orbit", "a river", "a tunnel", "a bridge"),
    ("How many legs does a bird have?", "two", "four", "six", "eight"),
    ("How many legs does a cow have?", "four", "two", "six", "ten"),
    ("What does the heart pump around the body?", "blood", "air", "food", "water"),
    ("What do our bones make up?", "the skeleton", "the skin", "the hair", "the blood"),
    ("What do teeth help us do?", "chew food", "hear sounds", "see colors", "smell flowers"),
    ("What kind of energy does a solar panel use?", "sunlight", "wind", "coal", "water"),
    ("What happens to water when it gets very cold?", "it freezes", "it boils", "it burns", "it evaporates"),
]

# ---------------------------------------------------------------------------------------------- vocabulary
ANTONYMS = [
    ("hot", "cold"), ("big", "small"), ("tall", "short"), ("fast", "slow"), ("happy", "sad"), ("up", "down"),
    ("open", "closed"), ("light", "dark"), ("full", "empty"), ("wet", "dry"), ("old", "new"), ("early", "late"),
    ("hard", "soft"), ("loud", "quiet"), ("rich", "poor"), ("strong", "weak"), ("clean", "dirty"), ("easy", "difficult"),
    ("first", "last"), ("push", "pull"), ("buy", "sell"), ("win", "lose"), ("day", "night"), ("inside", "outside"),
    ("before", "after"), ("thick", "thin"), ("heavy", "light"), ("wide", "narrow"), ("top", "bottom"),
    ("remember", "forget"), ("arrive", "leave"), ("laugh", "cry"), ("always", "never"), ("friend", "enemy"),
    ("sweet", "sour"), ("true", "false"), ("young", "old"), ("left", "right"),
]
SYNONYMS = [
    ("big", "large"), ("small", "little"), ("happy", "glad"), ("fast", "quick"), ("begin", "start"),
    ("end", "finish"), ("shut", "close"), ("angry", "mad"), ("scared", "afraid"), ("smart", "clever"),
    ("tired", "sleepy"), ("correct", "right"), ("gift", "present"), ("shout", "yell"), ("quiet", "silent"),
    ("look", "see"), ("pretty", "beautiful"), ("rock", "stone"), ("sick", "ill"), ("unhappy", "sad"),
    ("road", "street"), ("choose", "pick"), ("enormous", "huge"), ("wealthy", "rich"),
]
# filler words for distractors of antonym/synonym items (never a real antonym/synonym of the target)
VOCAB_FILLERS = ["table", "purple", "seven", "window", "banana", "pencil", "river", "monday", "carrot", "guitar",
                 "yellow", "bottle", "spoon", "garden", "orange", "button", "candle", "basket", "ladder", "pillow"]
PLURALS = [
    ("child", "children", "childs"), ("mouse", "mice", "mouses"), ("foot", "feet", "foots"),
    ("tooth", "teeth", "tooths"), ("man", "men", "mans"), ("woman", "women", "womans"),
    ("goose", "geese", "gooses"), ("person", "people", "persons"), ("box", "boxes", "boxs"),
    ("baby", "babies", "babys"), ("leaf", "leaves", "leafs"), ("knife", "knives", "knifes"),
    ("wolf", "wolves", "wolfs"), ("city", "cities", "citys"), ("bus", "buses", "bus"), ("dish", "dishes", "dishs"),
    ("fox", "foxes", "foxs"), ("ox", "oxen", "oxes"), ("potato", "potatoes", "potatos"),
]
PAST = [
    ("go", "went", "goed"), ("eat", "ate", "eated"), ("see", "saw", "seed"), ("run", "ran", "runned"),
    ("swim", "swam", "swimmed"), ("write", "wrote", "writed"), ("sing", "sang", "singed"), ("drink", "drank", "drinked"),
    ("take", "took", "taked"), ("give", "gave", "gived"), ("buy", "bought", "buyed"), ("think", "thought", "thinked"),
    ("catch", "caught", "catched"), ("teach", "taught", "teached"), ("fly", "flew", "flied"),
    ("speak", "spoke", "speaked"), ("break", "broke", "breaked"), ("drive", "drove", "drived"),
    ("sleep", "slept", "sleeped"), ("make", "made", "maked"), ("come", "came", "comed"), ("find", "found", "finded"),
    ("walk", "walked", "walk"), ("jump", "jumped", "jump"), ("play", "played", "play"),
]
WORD_KINDS = {
    "a color": ["red", "blue", "green", "purple", "yellow", "brown", "pink"],
    "a fruit": ["apple", "banana", "cherry", "grape", "mango", "pear", "peach"],
    "an animal": ["horse", "rabbit", "tiger", "donkey", "squirrel", "goat", "wolf"],
    "a piece of furniture": ["sofa", "chair", "table", "wardrobe", "bookshelf", "stool"],
    "a vehicle": ["truck", "bus", "train", "tractor", "motorcycle", "van"],
    "a musical instrument": ["violin", "drum", "flute", "trumpet", "harp", "cello"],
}

# ---------------------------------------------------------------------------------------------- reading
NAMES = ["Mia", "Leo", "Sara", "Omar", "Nina", "Jack", "Lily", "Ravi", "Emma", "Noah", "Zoe", "Ali", "Hana", "Tom",
         "Ella", "Ben", "Ivy", "Sam", "Lucy", "Max"]
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
THINGS = ["bike", "hat", "kite", "scarf", "backpack", "umbrella", "ball", "jacket"]
PLACES = ["the park", "the library", "the beach", "the market", "the museum", "the zoo", "the bakery", "the lake"]
FOODS = ["apples", "bread", "cheese", "oranges", "rice", "carrots", "cookies", "grapes"]
PETS = ["a dog", "a cat", "a rabbit", "a parrot", "a hamster", "a goldfish", "a turtle", "a pony"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _norm(q: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", q.lower()).strip()


def _item(skill: str, question: str, correct: str, wrong: list[str], rng: random.Random,
          passage: str | None = None) -> dict:
    assert len(wrong) == 3 and correct not in wrong and len(set(wrong)) == 3, (question, correct, wrong)
    choices = [correct, *wrong]
    rng.shuffle(choices)
    row = {"skill": skill, "question": question, "choices": choices, "answer": choices.index(correct)}
    if passage is not None:
        row = {"skill": skill, "passage": passage, **{k: v for k, v in row.items() if k != "skill"}}
    return row


def _others(pool: list[str], exclude: str | set[str], k: int, rng: random.Random) -> list[str]:
    ex = {exclude} if isinstance(exclude, str) else exclude
    return rng.sample(sorted(x for x in set(pool) if x not in ex), k)


def arithmetic(rng: random.Random) -> list[dict]:
    out: list[dict] = []
    seen: set[str] = set()

    def add(q: str, ans: int) -> None:
        if q in seen or _norm(q) in _taught():
            return
        seen.add(q)
        offsets = [d for d in (-10, -5, -3, -2, -1, 1, 2, 3, 5, 10) if ans + d >= 0]
        wrong = [str(ans + d) for d in rng.sample(offsets, 3)]
        out.append(_item("arithmetic", q, str(ans), wrong, rng))

    while len(out) < 40:  # two-digit addition
        a, b = rng.randint(2, 30), rng.randint(2, 30)
        add(f"What is {a} plus {b}?", a + b)
    while len(out) < 70:  # subtraction with a non-negative result
        a, b = rng.randint(5, 40), rng.randint(1, 20)
        if a > b:
            add(f"What is {a} minus {b}?", a - b)
    while len(out) < 100:  # times tables
        a, b = rng.randint(2, 10), rng.randint(2, 10)
        add(f"What is {a} times {b}?", a * b)
    names, objs = NAMES, ["apples", "pencils", "stickers", "marbles", "books", "cookies", "stamps", "shells"]
    while len(out) < 130:  # one-step word problems
        n, o = rng.choice(names), rng.choice(objs)
        a, b = rng.randint(2, 15), rng.randint(2, 9)
        if rng.random() < 0.5:
            add(f"{n} has {a} {o} and gets {b} more. How many {o} does {n} have now?", a + b)
        elif a > b:
            add(f"{n} has {a} {o} and gives away {b}. How many {o} does {n} have left?", a - b)
    return out


def knowledge(rng: random.Random) -> list[dict]:
    out = []
    cities = [c for _, c in CAPITALS]
    for country, city in CAPITALS:
        out.append(_item("knowledge", f"What is the capital city of {country}?", city, _others(cities, city, 3, rng), rng))
    for country, cont in COUNTRY_CONTINENT:
        out.append(_item("knowledge", f"On which continent is {country}?", cont, _others(CONTINENTS, cont, 3, rng), rng))
    langs = [x for _, x in LANGUAGES]
    for country, lang in LANGUAGES:
        q = f"What is the main language spoken in {country}?"
        out.append(_item("knowledge", q, lang, _others(langs, lang, 3, rng), rng))
    for q, c, *w in KNOWLEDGE:
        out.append(_item("knowledge", q, c, list(w), rng))
    return out


def commonsense(rng: random.Random) -> list[dict]:
    return [_item("commonsense", q, c, list(w), rng) for q, c, *w in COMMONSENSE]


def science(rng: random.Random) -> list[dict]:
    out = [_item("science", q, c, list(w), rng) for q, c, *w in SCIENCE]
    kinds = list(ANIMAL_KINDS)
    for kind, animals in ANIMAL_KINDS.items():
        for a in animals:
            out.append(_item("science", f"What kind of animal is {a}?", kind, _others(kinds, kind, 3, rng), rng))
    return out


def vocabulary(rng: random.Random) -> list[dict]:
    out = []
    for w, a in ANTONYMS:
        out.append(_item("vocabulary", f"What is the opposite of the word '{w}'?", a,
                         _others(VOCAB_FILLERS, {w, a}, 3, rng), rng))
    for w, s in SYNONYMS:
        out.append(_item("vocabulary", f"Which word means the same as '{w}'?", s,
                         _others(VOCAB_FILLERS, {w, s}, 3, rng), rng))
    for w, pl, bad in PLURALS:
        wrong = [bad, *_others([p for _, p, _ in PLURALS], {pl, bad}, 2, rng)]
        out.append(_item("vocabulary", f"What is the plural of the word '{w}'?", pl, wrong, rng))
    for w, pt, bad in PAST:
        wrong = [bad, *_others([p for _, p, _ in PAST], {pt, bad}, 2, rng)]
        out.append(_item("vocabulary", f"What is the past tense of the verb '{w}'?", pt, wrong, rng))
    kinds = list(WORD_KINDS)
    for kind, words in WORD_KINDS.items():
        for w in words:
            out.append(_item("vocabulary", f"What is '{w}'?", kind, _others(kinds, kind, 3, rng), rng))
    return out


def reading(rng: random.Random, n: int = 110) -> list[dict]:
    """Short passages from our tables; each question's distractors include what else the passage mentions,
    so the answer has to be read from the passage, not guessed from the question."""
    out: list[dict] = []
    seen: set[str] = set()
    while len(out) < n:
        a, b = rng.sample(NAMES, 2)
        c1, c2 = rng.sample(COLORS, 2)
        t1, t2 = rng.sample(THINGS, 2)
        place, food, pet, day = rng.choice(PLACES), rng.choice(FOODS), rng.choice(PETS), rng.choice(DAYS)
        passage = (f"{a} has a {c1} {t1} and a {c2} {t2}. On {day}, {a} went to {place} with {b}. "
                   f"They bought some {food} on the way home. {b} has {pet} at home.")
        kind = len(out) % 5
        if kind == 0:
            q, ans, wrong = f"What color is {a}'s {t1}?", c1, [c2, *_others(COLORS, {c1, c2}, 2, rng)]
        elif kind == 1:
            q, ans, wrong = f"Where did {a} go on {day}?", place, _others(PLACES, place, 3, rng)
        elif kind == 2:
            q, ans, wrong = f"Who went to {place} with {a}?", b, _others(NAMES, {a, b}, 3, rng)
        elif kind == 3:
            q, ans, wrong = "What did they buy on the way home?", food, _others(FOODS, food, 3, rng)
        else:
            q, ans, wrong = f"Which pet does {b} have?", pet, _others(PETS, pet, 3, rng)
        key = _norm(passage + " " + q)
        if key in seen:
            continue
        seen.add(key)
        out.append(_item("reading", q, ans, wrong, rng, passage=passage))
    return out


def build() -> list[dict]:
    rng = random.Random(SEED)
    groups = [arithmetic(rng), knowledge(rng), commonsense(rng), reading(rng), science(rng), vocabulary(rng)]
    for g in groups:  # within a skill, mix the generators and tables (the first n then samples them all)
        rng.shuffle(g)
    for g in groups:
        for k, r in enumerate(g):
            r["id"] = f"mc-{r['skill']}-{k:03d}"
    # interleave the skills in proportion, so that the first n items of the file sample every skill
    rows = sorted((r for g in groups for r in g), key=lambda r: (int(r["id"][-3:]) + 0.5) / _size(groups, r["skill"]))
    _check(rows)
    return [{"id": r.pop("id"), **r} for r in rows]


def _size(groups: list[list[dict]], skill: str) -> int:
    return next(len(g) for g in groups if g[0]["skill"] == skill)


def _taught() -> set[str]:
    """The general-QA questions the align step trains on (normalised)."""
    qa = ROOT / "src" / "safetydrift" / "datasets" / "data" / "general_qa.jsonl"
    return {_norm(json.loads(x)["question"]) for x in qa.read_text(encoding="utf-8").splitlines() if x.strip()}


def _check(rows: list[dict]) -> None:
    """Unique questions (with their passage), 4 distinct choices, and no question the align data teaches."""
    taught = _taught()
    seen: set[str] = set()
    for r in rows:
        key = _norm(r.get("passage", "") + " " + r["question"])
        if key in seen:
            raise SystemExit(f"duplicate question: {r['question']}")
        if _norm(r["question"]) in taught:
            raise SystemExit(f"question taught by general_qa.jsonl: {r['question']}")
        if len(set(r["choices"])) != 4:
            raise SystemExit(f"choices not 4 distinct: {r}")
        seen.add(key)


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the shipped file differs")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    text = render(build())
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        print("up to date" if same else f"{args.out} differs from what the script writes")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {text.count(chr(10))} items to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
